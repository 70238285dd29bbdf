"""A run sets torch's TF32 flags and the global RNGs for itself and gives the caller's back; RunContext is a
protocol that the runner's context and a test double both satisfy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api import RunContext
from harness.runner import GLOBAL_SEED, Runner, RunOptions, run_wide_state
from run_context_double import FakeContext


def test_run_wide_state_sets_then_restores_flags_and_generators():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        torch.manual_seed(123)
        np.random.seed(123)
        expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
        torch.manual_seed(123)
        np.random.seed(123)
        with run_wide_state(GLOBAL_SEED):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            inside = torch.rand(3)
            torch.manual_seed(GLOBAL_SEED)
            assert torch.equal(inside, torch.rand(3))  # seeded with the run's seed
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.equal(torch.rand(3), expected_torch)  # the caller's streams go on where they were
        np.testing.assert_array_equal(np.random.rand(3), expected_numpy)
        with pytest.raises(RuntimeError), run_wide_state(GLOBAL_SEED):
            raise RuntimeError("a failing run")
        assert torch.backends.cuda.matmul.allow_tf32  # restored on error too
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_run_leaves_the_callers_state_alone(results_dir):
    torch.backends.cuda.matmul.allow_tf32, before = True, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.manual_seed(7)
        expected = torch.rand(2)
        torch.manual_seed(7)
        Runner(options=RunOptions(progress=False, device="cpu")).run("toy-gauss", "toy-sampler", {})
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.equal(torch.rand(2), expected)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_run_context_is_a_protocol_both_implementations_satisfy(tmp_path, results_dir):
    from harness.registry import METHODS, TASKS

    assert isinstance(FakeContext(tmp_path), RunContext)
    assert not isinstance(object(), RunContext)
    runner = Runner(options=RunOptions(progress=False, device="cpu"))
    seen = []
    runner.record(runner.plan("toy-gauss", "toy-sampler"), lambda ctx: seen.append(ctx) or [], "protocol-check")
    assert isinstance(seen[0], RunContext)  # the runner's own context
    task, method = TASKS.get("toy-gauss")(), METHODS.get("toy-sampler")()
    samples = method.generate(task.requests())
    values = {m.name: m.value for m in task.score(samples, FakeContext(tmp_path))}  # a task scores with the double
    assert values["count"] == len(samples)
    assert values["mean_value"] == pytest.approx(float(samples.mean()), rel=1e-6)
