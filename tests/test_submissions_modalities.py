"""One submission per modality through the real queue, worker and sandbox, against `arbench run` of the same method:
the same numbers and the same evaluation signature (offline tasks, small settings). Timing studies (decoding
speedup) run their whole protocol inside the sandbox: their timings differ run to run, so only the counted
metrics must match."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.isolation import probe_isolation
from harness.runner import RunOptions, Runner
from harness.store import Store
from harness.submissions import get_submission, submit
from harness.worker import Limits, Worker

pytestmark = pytest.mark.skipif(not probe_isolation().sandboxed,
                                reason=f"needs bubblewrap ({probe_isolation().detail})")


def _submit_and_run(tmp_path: Path, store: Store, task: str, method: str, task_settings: dict,
                    settings: dict) -> dict:
    lines = [f'task = "{task}"', f'method = "{method}"', 'license = "MIT"', f'label = "{method} (submitted)"',
             "[submitter]", 'name = "Author"', "[settings]", *[f"{k} = {json.dumps(v)}" for k, v in settings.items()],
             "[task_settings]", *[f"{k} = {json.dumps(v)}" for k, v in task_settings.items()]]
    (tmp_path / "manifest.toml").write_text("\n".join(lines) + "\n")
    sub_id = submit(store, tmp_path / "manifest.toml")
    assert Worker(store, lease_seconds=60, limits=Limits(memory_mb=8192, wall_seconds=600)).run(once=True) == 1
    job = get_submission(store, sub_id)
    assert job["state"] == "finished", job["history"]
    (record,) = [r for r in store.records() if r["run_id"] == job["run_id"]]
    assert record["source"] == "submitted" and "isolation: bubblewrap" in record["provenance"]["isolation"]
    return record


def _direct(store: Store, task: str, method: str, overrides: dict) -> dict:
    result = Runner(store, RunOptions(progress=False, device="cpu")).run(task, method, overrides)
    (record,) = [r for r in store.records() if r["run_id"] == result.run_id]
    return record


def _same(submitted: dict, direct: dict, names=None) -> None:
    assert submitted["eval_signature"] == direct["eval_signature"]
    names = names or sorted(direct["metrics"])
    assert sorted(submitted["metrics"]) == sorted(direct["metrics"])
    for name in names:
        a, b = submitted["metrics"][name]["value"], direct["metrics"][name]["value"]
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-9), name


@pytest.fixture
def store(results_dir) -> Store:
    return Store(f"sqlite:///{results_dir / 'arbench.db'}")


def test_class_to_image(tmp_path, store):
    task, settings = {"num_samples": 100}, {}
    submitted = _submit_and_run(tmp_path, store, "digits-c2i", "digits-pca-gaussian", task, settings)
    _same(submitted, _direct(store, "digits-c2i", "digits-pca-gaussian", {**task, **settings}))


def test_class_to_video(tmp_path, store):
    submitted = _submit_and_run(tmp_path, store, "moving-digits-fvd", "moving-digits-pca", {}, {})
    _same(submitted, _direct(store, "moving-digits-fvd", "moving-digits-pca", {}))


def test_translation(tmp_path, store):
    task, settings = {"bootstrap": 0, "latency": False}, {"iterations": 2}  # latency: see docs/submissions.md
    submitted = _submit_and_run(tmp_path, store, "nat-mini", "cmlm", task, settings)
    _same(submitted, _direct(store, "nat-mini", "cmlm", {**task, **settings}))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_tts(tmp_path, store):
    task = {"rtf_items": 0}
    submitted = _submit_and_run(tmp_path, store, "espeak-tts-mini", "espeak-ng", task, {})
    _same(submitted, _direct(store, "espeak-tts-mini", "espeak-ng", task))


def test_text_to_image(tmp_path, store, monkeypatch):
    """GenEval has no offline variant (its detector and CLIP weights are not here): a test plugin lets the sandbox
    skip the asset check, and the worker scores with the scripted detector of test_geneval_task."""
    import plugins.geneval_offline  # noqa: F401 - registers geneval-sandbox-t2i here too
    from tasks.geneval import GenEval, score_images
    from test_geneval_task import PlannedDetector, PromptColors

    from tasks.geneval import METADATA

    home_dir = tmp_path / "home"
    (home_dir / "weights").mkdir(parents=True)
    shutil.copyfile(Path(__file__).parent / "data" / "geneval_evaluation_metadata.jsonl",
                    home_dir / "weights" / METADATA.filename)
    monkeypatch.setenv("ARBENCH_HOME", str(home_dir))
    monkeypatch.setenv("ARBENCH_PLUGINS", os.environ["ARBENCH_PLUGINS"] + ",plugins.geneval_offline")
    monkeypatch.setattr(GenEval, "require_assets", lambda self: None)
    monkeypatch.setattr(GenEval, "score", lambda self, samples, ctx: score_images(
        samples, (d := PlannedDetector(samples)), PromptColors(d), self.rules, ctx))
    folder = tmp_path / "bundle"
    folder.mkdir()
    submitted = _submit_and_run(folder, store, "geneval", "geneval-sandbox-t2i", {"images_per_prompt": 1}, {})
    direct = _direct(store, "geneval", "geneval-sandbox-t2i", {"images_per_prompt": 1})
    _same(submitted, direct)
    assert 0.4 < submitted["metrics"]["geneval"]["value"] < 0.6


def test_decoding_speedup_timing_study(tmp_path, store):
    task = {"max_prompts": 4, "max_new_tokens": 16, "batch_sizes": [1], "rounds": 1, "warmup": 0}
    settings = {"k": 3}
    submitted = _submit_and_run(tmp_path, store, "decoding-speedup-mini", "speculative", task, settings)
    direct = _direct(store, "decoding-speedup-mini", "speculative", {**task, **settings})
    counted = ["generated_tokens", "exact_match_rate", "forward_passes_per_token", "draft_passes_per_token",
               "mean_accepted_tokens"]
    _same(submitted, direct, counted)
    assert "timing study" in submitted["provenance"]["measured_in_sandbox"]
    assert submitted["metrics"]["speedup"]["value"] > 0
