"""The examples in `harness.metrics` docstrings run (as `pytest --doctest-modules harness/metrics` does), and every
public name of `harness.metrics` documents its arguments with an example."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import harness.metrics

MODULES = sorted(f"harness.metrics.{m.name}" for m in pkgutil.iter_modules(harness.metrics.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the captured output)"


@pytest.mark.parametrize("name", harness.metrics.__all__)
def test_public_names_have_torchmetrics_style_docstrings(name):
    doc = inspect.getdoc(getattr(harness.metrics, name)) or ""
    assert "Example:" in doc and ">>>" in doc, f"harness.metrics.{name} has no doctest example"
    assert "Args:" in doc, f"harness.metrics.{name} does not document its arguments (Args:)"
