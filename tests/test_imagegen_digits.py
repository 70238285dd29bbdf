"""The bundled digits generators (raster and PAR) through the runner: digits-c2i scores, the speed study,
per-request determinism, settings in the signature, bad settings refused up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.imagegen import digits_mini
from baselines.imagegen.checkpoints import read_state_dict
from harness.api import Request
from harness.errors import ArbenchError
from harness.registry import METHODS
from harness.runner import RunOptions, Runner
from harness.store import Store


@pytest.fixture
def runner(results_dir):
    return Runner(Store(f"sqlite:///{results_dir / 'arbench.db'}"), RunOptions(progress=False, batch_size=50))


def test_tokenisation_round_trip_matches_the_task_format():
    from harness.datasets.digits import digits_to_images, load_digits_arrays

    images, _ = load_digits_arrays()
    tokens = digits_mini.quantise(images[:20])
    assert tokens.shape == (20, 64) and set(np.unique(tokens)) <= {0, 1, 2, 3}
    rendered = digits_mini.tokens_to_images(tokens, 32)
    expected = digits_to_images(tokens.reshape(-1, 8, 8) * 16 / 3, 32)
    np.testing.assert_array_equal(rendered, expected)
    assert np.abs(rendered.astype(int) - digits_to_images(images[:20], 32)).max() <= 255 / 6 + 1


def test_bundled_files_are_small_and_carry_their_training_record():
    for order, path in digits_mini.FILES.items():
        assert path.stat().st_size < 3_000_000
        meta = digits_mini.file_metadata(path)
        assert meta["training"]["order"] == order and meta["training"]["heldout_bits_per_token"] < 1.0
        state = read_state_dict(path)
        assert ("transition_tokens" in state) == (order == "par")


@pytest.mark.parametrize("name", ["digits-ar-raster", "digits-ar-par"])
def test_generation_is_per_request_and_class_conditional(name):
    method = METHODS.get(name)()
    requests = [Request(i, str(i), 500 + i, {"label": i % 10, "image_size": 16}) for i in range(10)]
    whole = method.generate(requests)
    assert whole.shape == (10, 16, 16, 3) and whole.dtype == np.uint8
    np.testing.assert_array_equal(whole, np.concatenate([method.generate(requests[:3]), method.generate(requests[3:])]))
    # a trained class-conditional model: DigitsNet recognises most samples as the requested class
    from harness.features.digits_net import digits_features, load_digits_net

    samples = method.generate([Request(i, str(i), i, {"label": i % 10, "image_size": 32}) for i in range(100)])
    predicted = digits_features(load_digits_net()[0], samples)["logits"].argmax(1)
    assert (predicted == np.arange(100) % 10).mean() > 0.5


def test_runs_through_digits_c2i_with_sampler_settings_in_the_signature(runner, results_dir):
    values = {}
    for name in ("digits-ar-raster", "digits-ar-par"):
        result = runner.run("digits-c2i", name, {"num_samples": 100, "cfg_scale": 1.5})
        values[name] = {m.name: m.value for m in result.metrics}
    for v in values.values():
        assert v["class_accuracy_digits"] > 0.5 and 1 < v["is_digits"] <= 10
    records = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert len(records) == 2
    for r in records:
        assert "cfg_scale:1.5" in r["signature"] and "top_k:0" in r["signature"] and "checkpoint_sha256:" in r["signature"]
    assert any("order:par" in r["signature"] for r in records) and any("order:raster" in r["signature"] for r in records)


def test_unknown_or_invalid_sampler_settings_are_refused_up_front(runner):
    with pytest.raises(ArbenchError, match="cfg_scale"):
        runner.plan("digits-c2i", "digits-ar-par", {"cfg_scael": 2.0})
    with pytest.raises(ArbenchError, match="top_p"):
        runner.plan("digits-c2i", "digits-ar-par", {"top_p": 1.5})
    with pytest.raises(ArbenchError, match="labels"):
        METHODS.get("digits-ar-raster")().generate([Request(0, "0", 0, {"label": 10})])


def test_speed_study_times_par_against_raster(runner):
    threads = torch.get_num_threads()
    result = runner.run("c2i-speedup-digits", "digits-ar-par", {"items": 2, "batch_sizes": (1, 4), "rounds": 1})
    values = {m.name: m for m in result.metrics}
    assert values["steps_per_image"].value == 19 and values["steps_per_image_baseline"].value == 64
    # the speed itself is a benchmark figure (benchmarks/imagegen_par_speed.py), not a test: on a shared machine
    # two rounds of two items can land anywhere; the test checks the study's bookkeeping
    speedup = values["speedup_b1"]
    assert speedup.value > 0 and speedup.ci_low <= speedup.value <= speedup.ci_high
    assert values["images_per_s_b4"].value > 0 and values["latency_ms_per_image_b4_baseline"].value > 0
    assert torch.get_num_threads() == threads  # the study's thread setting is restored


def test_two_gloo_ranks_generate_the_same_images_as_one(results_dir, runner):
    """Shards go to ranks round-robin; per-request seeds make the images independent of the split."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, ARBENCH_RESULTS=str(results_dir), OMP_NUM_THREADS="1",
               PYTHONPATH=f"{Path(__file__).resolve().parent}{os.pathsep}{root}")
    env.pop("ARBENCH_DB_URL", None)
    common = ["digits-c2i", "digits-ar-par", "--set", "num_samples=40", "--shard-size", "10", "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", "-m", "harness", "run", *common, "--batch-size", "3", "--device", "cpu"],
                         env=env, cwd=results_dir.parent, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    (record,) = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert record["provenance"]["world_size"] == 2
    two_images = np.concatenate([np.load(d / "images.npy") for d in
                                 sorted(Path(record["artifacts_path"]).glob("shards-10/shard-*"))])
    method = METHODS.get("digits-ar-par")()
    task_requests = runner.plan("digits-c2i", "digits-ar-par", {"num_samples": 40}).task.requests()
    np.testing.assert_array_equal(two_images, method.generate(task_requests))
