"""digits-c2i: the bundled DigitsNet and PCA-Gaussian generator, and the task end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.datasets.digits import digits_to_images, held_out_mask, load_digits_arrays
from harness.features.digits_net import DigitsNet, digits_features, load_digits_net
from baselines.digits.pca_generator import DigitsPCAGaussian
from harness.api import Request
from harness.metrics import feature_statistics, frechet_distance
from harness.runner import RunOptions, Runner
from harness.store import Store


@pytest.fixture(scope="module")
def digits():
    values, labels = load_digits_arrays()
    return digits_to_images(values, 32), labels


def test_bundled_feature_net_classifies_held_out_digits(digits):
    images, labels = digits
    model, sha = load_digits_net()
    held = held_out_mask(len(labels))
    feats = digits_features(model, images[held])
    assert (feats["logits"].argmax(1) == labels[held]).mean() >= 0.98
    assert feats["pool"].shape == (held.sum(), 128) and len(sha) == 64
    # The state dict names and shapes are those of the module at its released configuration.
    fresh = DigitsNet().state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.items()}


def test_features_do_not_depend_on_batch_size_or_upscaling(digits):
    images, _ = digits
    model, _ = load_digits_net()
    a = digits_features(model, images[:50], batch_size=50)
    b = digits_features(model, images[:50], batch_size=7)
    np.testing.assert_allclose(a["pool"], b["pool"], rtol=1e-5, atol=1e-6)
    native = digits_features(model, digits_to_images(load_digits_arrays()[0][:50], 8))
    np.testing.assert_allclose(a["pool"], native["pool"], rtol=1e-5, atol=1e-5)


def test_frechet_distance_on_digits_features_separates_real_from_noise(digits):
    images, labels = digits
    model, _ = load_digits_net()
    held = held_out_mask(len(labels))
    train, test = digits_features(model, images[~held])["pool"], digits_features(model, images[held])["pool"]
    rng = np.random.default_rng(0)
    noise = digits_features(model, rng.integers(0, 256, images[held].shape, dtype=np.uint8))["pool"]
    real_gap = frechet_distance(*feature_statistics(test), *feature_statistics(train))
    noise_gap = frechet_distance(*feature_statistics(noise), *feature_statistics(train))
    assert 0 < real_gap < noise_gap / 10


def test_generator_is_seeded_per_request_and_class_conditional():
    method = DigitsPCAGaussian()
    requests = [Request(i, str(i), 100 + i, {"label": i % 10, "image_size": 16}) for i in range(12)]
    whole = method.generate(requests)
    parts = np.concatenate([method.generate(requests[:5]), method.generate(requests[5:])])
    np.testing.assert_array_equal(whole, parts)
    assert whole.shape == (12, 16, 16, 3) and whole.dtype == np.uint8
    model, _ = load_digits_net()
    samples = method.generate([Request(i, str(i), i, {"label": i % 10, "image_size": 32}) for i in range(200)])
    predicted = digits_features(model, samples)["logits"].argmax(1)
    assert (predicted == np.arange(200) % 10).mean() > 0.8


def test_run_end_to_end_and_real_digits_score_better(tmp_path, results_dir, digits):
    runner = Runner(Store(f"sqlite:///{results_dir / 'arbench.db'}"), RunOptions(progress=False, batch_size=64))
    result = runner.run("digits-c2i", "digits-pca-gaussian", {"num_samples": 200})
    values = {m.name: m.value for m in result.metrics}
    assert set(values) == {"fd_digits", "is_digits", "precision_digits", "recall_digits", "class_accuracy_digits"}
    assert 1 < values["is_digits"] <= 10 and values["class_accuracy_digits"] > 0.8
    # Real digits, 20 per class, scored as user samples: closer to the reference than the generator.
    images, labels = digits
    pick = np.concatenate([np.flatnonzero(labels == c)[:20] for c in range(10)])
    pick = pick.reshape(10, 20).T.reshape(-1)  # interleave classes as the protocol does
    path = tmp_path / "real.npz"
    np.savez(path, arr_0=images[pick], arr_1=labels[pick])
    real = {m.name: m.value for m in runner.score("digits-c2i", path, {"num_samples": 200}).metrics}
    assert real["fd_digits"] < values["fd_digits"]
    assert real["class_accuracy_digits"] > 0.98
    records = Store(f"sqlite:///{results_dir / 'arbench.db'}").records()
    assert all("feature_net_sha256:" in r["signature"] and "reference:sklearn-digits-1797" in r["signature"]
               for r in records)
