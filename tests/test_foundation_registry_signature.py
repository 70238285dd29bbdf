"""Registry lookups and errors, signatures, and `--set` parsing."""

from __future__ import annotations

import pytest

from harness.cli import parse_set
from harness.errors import ArbenchError
from harness.registry import METHODS, TASKS, Registry, UnknownNameError
from harness.signature import Signature


def test_user_plugin_registers_without_editing_the_project():
    assert "toy-gauss" in TASKS.names() and "toy-sampler" in METHODS.names()
    assert TASKS.get("toy-gauss").name == "toy-gauss"


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown task 'toy-gaus'\. Did you mean: toy-gauss\?") as info:
        TASKS.get("toy-gaus")
    assert "arbench tasks" in str(info.value)
    with pytest.raises(UnknownNameError, match="unknown method 'zzzz'\\. Run `arbench methods`"):
        METHODS.get("zzzz")


def test_registry_refuses_bad_and_duplicate_names():
    reg: Registry = Registry("thing")
    with pytest.raises(ValueError, match="kebab-case"):
        reg.register("Has Space")
    with pytest.raises(ValueError, match="kebab-case"):
        reg.register("a/b")

    @reg.register("one")
    class One:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        @reg.register("one")
        class Other:
            pass


def test_signature_is_canonical_and_hash_stable():
    a = Signature().add("task", "x").update("method", {"top_k": 0, "cfg": 2.0, "greedy": True, "schedule": [1, 2]})
    b = Signature().add("task", "x").update("method", {"schedule": [1, 2], "greedy": True, "cfg": 2.0, "top_k": 0})
    assert str(a) == str(b) == "task:x|method.cfg:2.0|method.greedy:yes|method.schedule:[1,2]|method.top_k:0"
    assert a.hash == b.hash and len(a.hash) == 16
    assert Signature.parse(str(a)).entries == a.entries
    c = Signature(dict(a.entries)).add("method.cfg", 1.5)
    assert a.diff(c) == {"method.cfg": ("2.0", "1.5")}
    assert a.hash != c.hash
    assert str(a.subset(("method.",))) == "task:x"
    with pytest.raises(ValueError):
        Signature().add("a|b", 1)
    assert str(Signature().add("path", "a|b")) == "path:a/b"


def test_parse_set_values():
    # values stay text; harness.settings parses each by its setting's declared type (tests/test_bad_input.py)
    assert parse_set(["cfg=2.0", "name=llamagen", "k=3", "flag=True", "ids=[1, 2]", "s=a=b"]) == {
        "cfg": "2.0", "name": "llamagen", "k": "3", "flag": "True", "ids": "[1, 2]", "s": "a=b"}
    for bad in (["cfg"], ["=3"]):
        with pytest.raises(ArbenchError, match="malformed --set"):
            parse_set(bad)


def test_every_bundled_plugin_module_imports():
    from harness.registry import PLUGIN_ERRORS, load_plugins

    load_plugins()
    assert PLUGIN_ERRORS == {}
