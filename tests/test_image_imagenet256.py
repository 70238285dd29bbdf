"""imagenet256-c2i end to end with an injected small reference, the Inception feature network against
torch-fidelity's, and sample validation (nothing stored on bad input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.errors import InputError
from harness.features.inception import FIDInceptionV3, extract_inception_features, load_fid_inception
from tasks._image_samples import load_image_samples

N_SAMPLES, N_CLASSES, SIZE = 10, 5, 32  # a scaled-down protocol: the code paths of the 50k one


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-initialised FID Inception saved under torch-fidelity's parameter names."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(FIDInceptionV3().state_dict(), path)
    return path


class _TinyCleanFidNet(torch.nn.Module):
    """Stands in for NVIDIA's TorchScript Inception: clean-fid calls `.layers` on (x - 128) / 128."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 2048, 299, stride=299, bias=False), torch.nn.Flatten())

    def forward(self, x):
        return self.layers(x)


@pytest.fixture(scope="module")
def cleanfid_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("cleanfid") / "inception-2015-12-05.pt"
    torch.jit.script(_TinyCleanFidNet()).save(str(path))
    return path


def test_network_matches_torch_fidelity_and_loads_the_real_parameter_names(inception_file):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    ours, sha = load_fid_inception(inception_file)
    # torch-fidelity loads the same file strictly: names and shapes are those of the released checkpoint.
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(inception_file))
    images = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = ours(images)
        pool, logits = theirs(images)
    torch.testing.assert_close(feats.pool, pool, rtol=0, atol=0)
    torch.testing.assert_close(feats.logits, logits, rtol=0, atol=0)
    assert feats.spatial.shape == (2, 2023) and len(sha) == 64
    # sFID features: Mixed_6d.branch1x1, first 7 channels, flattened height-width-channel.
    captured = {}
    ours.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.setdefault("map", o))
    with torch.no_grad():
        spatial = ours(images).spatial
    expected = captured["map"][:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(spatial, expected, rtol=0, atol=0)
    assert captured["map"].shape == (2, 192, 17, 17)


def test_feature_extraction_does_not_depend_on_chunking(inception_file):
    model, _ = load_fid_inception(inception_file)
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    whole = extract_inception_features(model, images, batch_size=3)
    chunked = extract_inception_features(model, iter([images[:1], images[1:]]), batch_size=3)
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key])


def _samples(rng, n=N_SAMPLES, labels=True):
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    extra = {"arr_1": np.arange(n) % N_CLASSES} if labels else {}
    return images, extra


def _settings(tmp_path, inception_file, cleanfid_file, reference):
    pairs = {"num_samples": N_SAMPLES, "num_classes": N_CLASSES, "image_size": SIZE, "is_split_size": 5,
             "feature_batch_size": 8, "reference": reference, "inception_weights": inception_file,
             "cleanfid_weights": cleanfid_file}
    return [arg for k, v in pairs.items() for arg in ("--set", f"{k}={v}")]


def test_score_end_to_end_with_injected_reference(tmp_path, monkeypatch, results_dir, inception_file,
                                                  cleanfid_file, capsys):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    reference = tmp_path / "ref.npz"
    np.savez(reference, arr_0=_samples(rng, 6)[0], **full_rank_statistics(rng))
    images, labels = _samples(rng)
    samples = tmp_path / "samples.npz"
    np.savez(samples, arr_0=images, **labels)
    args = ["score", "imagenet256-c2i", str(samples), "--no-progress", "--device", "cpu",
            *_settings(tmp_path, inception_file, cleanfid_file, reference)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["export", "--format", "json"]) == 0
    (record,) = json.loads(_last_json(capsys))
    metrics = {name: m["value"] for name, m in record["metrics"].items()}
    assert set(metrics) == {"fid", "sfid", "inception_score", "inception_score_std", "precision", "recall",
                            "clean_fid_ref10k"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["clean_fid_ref10k"] > 0  # the stand-in network gives distinct features
    sig = record["signature"]
    for key in ("reference_sha256:", "inception_sha256:", "cleanfid_sha256:", "task.num_samples:10",
                "features.resize:tf1-bilinear", "features.spatial_layer:Mixed_6d.branch1x1", "metric_version.fid:1",
                "task.is_split_size:5", "task.pr_distance_dtype:float16", "metric_version.precision_recall:2"):
        assert key in sig, key
    assert str(tmp_path) not in sig  # paths are not part of the protocol; their sha256 is
    caches = sorted(p.name for p in (tmp_path / "home" / "cache" / "imagenet256").iterdir())
    assert len(caches) == 2  # reference Inception and clean-fid features, reused by the next run


def full_rank_statistics(rng):
    """ADM-shaped reference statistics (the official file's come from the whole training set)."""
    stats = {}
    for suffix, dims in (("", 2048), ("_s", 2023)):
        basis = rng.normal(size=(dims, 64)) * 0.05
        stats[f"mu{suffix}"] = rng.normal(size=dims) * 0.1
        stats[f"sigma{suffix}"] = basis @ basis.T + np.eye(dims) * 0.01
    return stats


def _last_json(capsys):
    out = capsys.readouterr().out
    return out[out.index("["):]


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(arr_0=d["arr_0"][:-1], arr_1=d["arr_1"][:-1]), "holds 9 images"),
    (lambda d: d.update(arr_0=d["arr_0"].astype(np.float32)), "must be uint8"),
    (lambda d: d.update(arr_0=d["arr_0"][..., :1]), "NHWC RGB"),
    (lambda d: d.update(arr_0=d["arr_0"][:, :16]), "scores 32x32"),
    (lambda d: d.update(arr_1=np.zeros(N_SAMPLES, dtype=np.int64)), "no sample"),
    (lambda d: d.update(arr_1=np.arange(N_SAMPLES) + 5), r"\[0, 5\)"),
    (lambda d: d.update(arr_1=np.array([object()] * N_SAMPLES)), "refusing to unpickle"),
    (lambda d: d.update(arr_0=np.asfortranarray(d["arr_0"])), "Fortran"),
    (lambda d: d.pop("arr_0"), "no arr_0"),
])
def test_bad_samples_are_refused_with_a_clear_message(tmp_path, mutate, message):
    images, labels = _samples(np.random.default_rng(1))
    arrays = {"arr_0": images, **labels}
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message):
        load_image_samples(path, N_SAMPLES, SIZE, N_CLASSES)


def test_corrupt_file_and_cli_store_nothing(tmp_path, results_dir, inception_file, cleanfid_file, capsys):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_image_samples(corrupt, N_SAMPLES, SIZE, N_CLASSES)
    short = tmp_path / "short.npz"
    np.savez(short, arr_0=_samples(np.random.default_rng(2), 5, labels=False)[0])
    reference = tmp_path / "ref.npz"
    np.savez(reference, arr_0=_samples(np.random.default_rng(3), 4, labels=False)[0])
    args = ["score", "imagenet256-c2i", str(short), "--no-progress",
            *_settings(tmp_path, inception_file, cleanfid_file, reference)]
    assert main(args) == 2
    assert "holds 5 images" in capsys.readouterr().err
    assert not (results_dir / "arbench.db").exists() or _no_runs(results_dir)


def _no_runs(results_dir):
    from harness.store import Store

    return Store(f"sqlite:///{results_dir / 'arbench.db'}").records() == []


def test_png_folder_is_read_in_order(tmp_path):
    from PIL import Image

    images, _ = _samples(np.random.default_rng(4))
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i:03d}.png")
    loaded = load_image_samples(tmp_path, N_SAMPLES, SIZE, N_CLASSES)
    np.testing.assert_array_equal(loaded.array(), images)
    np.savez(tmp_path / "s.npz", arr_0=images)
    streamed = load_image_samples(tmp_path / "s.npz", N_SAMPLES, SIZE, N_CLASSES)
    np.testing.assert_array_equal(np.concatenate(list(streamed.chunks(7))), images)


def test_missing_official_files_are_named_before_anything_is_stored(tmp_path, monkeypatch, results_dir, capsys):
    monkeypatch.setenv("ARBENCH_HOME", str(tmp_path / "empty-home"))
    samples = tmp_path / "samples.npz"
    np.savez(samples, arr_0=_samples(np.random.default_rng(5), labels=False)[0])
    assert main(["score", "imagenet256-c2i", str(samples), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "VIRTUAL_imagenet256_labeled.npz" in err and "openaipublic.blob.core.windows.net" in err
    # every missing file at once, each with where it goes and its fetch command
    from harness.features.inception import CLEANFID_INCEPTION, FID_INCEPTION
    from tasks.imagenet256 import ADM_REFERENCE_256

    assert "needs 3 files that are missing" in err  # the reference batch, FID's and clean-fid's Inception
    for spec in (ADM_REFERENCE_256, FID_INCEPTION, CLEANFID_INCEPTION):
        assert f"arbench weights fetch {spec.name}" in err and str(spec.cache_path) in err
    assert main(["run", "imagenet256-c2i", "llamagen-b", "--no-progress"]) == 2  # the method's checkpoint too
    err = capsys.readouterr().err
    assert "imagenet256-c2i with llamagen-b needs 5 files that are missing" in err  # GPT and VQ tokenizer too
    assert "arbench weights fetch llamagen-c2i-b-256" in err and ADM_REFERENCE_256.filename in err
    assert "arbench weights fetch llamagen-vq-ds16-c2i" in err
    assert not (results_dir / "arbench.db").exists() or _no_runs(results_dir)
