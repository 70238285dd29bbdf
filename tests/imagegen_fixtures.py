"""Helpers shared by the image-generator tests."""

from __future__ import annotations

import torch


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere: the released architectures zero-initialise some layers (LlamaGen's output
    layer, RAR's adaLN), which would let a wrong wiring pass unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def run_geneval_counting(method: str, settings: dict, tmp_path, monkeypatch, results_dir) -> list:
    """`arbench run geneval <method>` through the real runner and GenEval's folder writer and reader, with the
    detector and CLIP (no weights here) replaced by a count of what was read; returns the samples GenEval read
    after checking that every one of the 553 prompts came back once (pass `images_per_prompt: 1` to keep it fast)."""
    from pathlib import Path

    from harness.metrics.base import MetricValue
    from harness.runner import Runner, RunOptions
    from harness.store import Store
    from tasks.geneval import METADATA, GenEval

    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    prompts = Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl"
    (home / "weights" / METADATA.filename).write_bytes(prompts.read_bytes())
    monkeypatch.setenv("ARBENCH_HOME", str(home))
    seen = {}

    def count(self, samples, ctx):
        seen["samples"] = samples
        return [MetricValue("geneval", len(samples) / 553, True)]

    monkeypatch.setattr(GenEval, "require_assets", lambda self: None)
    monkeypatch.setattr(GenEval, "score", count)
    runner = Runner(store=Store(f"sqlite:///{results_dir / 'db.sqlite'}"),
                    options=RunOptions(batch_size=256, shard_size=300, device="cpu", progress=False))
    result = runner.run("geneval", method, settings)
    assert [m.value for m in result.metrics] == [1.0]
    samples = seen["samples"]
    assert len({s.prompt_index for s in samples}) == 553 and len(samples) == 553
    return samples
