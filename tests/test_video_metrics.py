"""Video metric rules: clip sampling, resizing, statistics, FVD math, reading and validating samples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision.transforms.v2.functional as TF

from harness.errors import InputError
from harness.metrics.video import (VideoSamples, clip_indices, clip_statistics, fvd, load_video_samples,
                                   maximum_likelihood_covariance, random_clip_offset, read_video,
                                   resize_short_side_center_crop, write_video)


def test_clip_indices_and_offsets():
    np.testing.assert_array_equal(clip_indices(200, 16), np.arange(16))
    np.testing.assert_array_equal(clip_indices(200, 16, stride=8, offset=3), 3 + 8 * np.arange(16))
    assert clip_indices(121, 16, stride=8)[-1] == 120  # a 16f-stride8 clip spans 121 frames
    with pytest.raises(InputError, match="needs 122 frames"):
        clip_indices(121, 16, stride=8, offset=1)
    rng = np.random.default_rng(0)
    offsets = [random_clip_offset(rng, 20, 16) for _ in range(200)]
    assert min(offsets) == 0 and max(offsets) == 4  # uniform over every window that fits
    with pytest.raises(InputError, match="shorter"):
        random_clip_offset(rng, 15, 16)


def test_short_side_resize_and_center_crop_match_torchvision():
    frames = np.random.default_rng(0).integers(0, 256, (3, 240, 320, 3), dtype=np.uint8)
    ours = resize_short_side_center_crop(frames, 128)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    ref = TF.center_crop(TF.resize(x, [128, 171], antialias=True), [128, 128])
    ref = ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (3, 128, 128, 3)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    square = np.full((2, 64, 64, 3), 77, np.uint8)
    np.testing.assert_array_equal(resize_short_side_center_crop(square, 64), square)


def test_statistics_are_unbiased_and_batch_invariant():
    feats = torch.randn(37, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    clips = np.arange(37)  # stand-ins: the feature function looks rows up

    def features(batch):
        return feats[torch.as_tensor(batch)]

    for batch_size in (1, 5, 37):
        mean, cov, n = clip_statistics((clips[i:i + batch_size] for i in range(0, 37, batch_size)), features, 6)
        assert n == 37
        np.testing.assert_allclose(mean, feats.mean(0).numpy(), rtol=1e-12)
        np.testing.assert_allclose(cov, np.cov(feats.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_fvd_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.3, 1.5, size=(300, 8)) @ rng.normal(size=(8, 8))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ma, mb = a.mean(0), b.mean(0)
    reference = ((ma - mb) ** 2).sum() + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert fvd((ma, sa), (mb, sb)) == pytest.approx(reference, rel=1e-9)
    assert fvd((ma, sa), (ma, sa)) == pytest.approx(0.0, abs=1e-9)


def cdfvd_compute_fvd_from_stats(real, fake):
    """cd-fvd: FeatureStats (float64 sums; `get_mean_cov` divides by N) and `compute_fvd_from_stats`."""
    def mean_cov(x):
        x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
        mean = x64.sum(0) / len(x64)
        return mean, x64.T @ x64 / len(x64) - np.outer(mean, mean)

    (mu_r, s_r), (mu_f, s_f) = mean_cov(real), mean_cov(fake)
    s, _ = scipy.linalg.sqrtm(np.dot(s_r, s_f), disp=False)
    return float(np.real(np.square(mu_r - mu_f).sum() + np.trace(s_f + s_r - s * 2)))


def test_cd_fvd_statistics_are_cd_fvds_biased_covariance():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(40, 6)).astype(np.float32)
    fake = (rng.normal(0.2, 1.3, size=(30, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    (mr, sr, nr), (mf, sf, nf) = (clip_statistics(iter([x]), torch.from_numpy, 6) for x in (real, fake))
    expected = cdfvd_compute_fvd_from_stats(real, fake)
    ours = fvd((mr, maximum_likelihood_covariance(sr, nr)), (mf, maximum_likelihood_covariance(sf, nf)))
    assert ours == pytest.approx(expected, rel=1e-9)
    assert fvd((mr, sr), (mf, sf)) != pytest.approx(expected, rel=1e-3)  # N - 1: FVD's convention, not cd-fvd's
    with pytest.raises(InputError, match="at least 2"):
        maximum_likelihood_covariance(sr, 1)


def test_video_files_round_trip_and_folder_loading(tmp_path):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (3, 12, 16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, video in enumerate(videos):
        write_video(folder / f"{i:03d}{'.avi' if i % 2 else '.mp4'}", video)
    np.testing.assert_array_equal(read_video(folder / "001.avi"), videos[1])  # FFV1 is lossless
    (folder / "labels.txt").write_text("0\n1\n1\n")
    samples = load_video_samples(folder, count=3, num_frames=10, stride=1, resolution=16, num_classes=2)
    np.testing.assert_array_equal(samples.labels, [0, 1, 1])
    batches = list(samples.batches(2))
    assert [b.shape for b in batches] == [(2, 10, 16, 16, 3), (1, 10, 16, 16, 3)]
    np.testing.assert_array_equal(batches[1][0], videos[2][:10])
    with pytest.raises(InputError, match="holds 3 videos; .* scores exactly 4"):
        load_video_samples(folder, count=4, num_frames=10)
    with pytest.raises(InputError, match="16x16; the protocol is defined at 32x32"):
        load_video_samples(folder, count=3, num_frames=10, resolution=32)
    (folder / "labels.txt").unlink()
    with pytest.raises(InputError, match="class-conditional"):
        load_video_samples(folder, count=3, num_frames=10, num_classes=2)
    (folder / "003.mp4").write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="003.mp4"):
        load_video_samples(folder, count=4, num_frames=10)


def test_array_validation_messages(tmp_path):
    good = np.zeros((4, 16, 8, 8, 3), np.uint8)
    path = tmp_path / "v.npz"
    np.savez(path, videos=good, labels=np.array([0, 1, 2, 3]))
    samples = load_video_samples(path, count=4, num_frames=16, resolution=8, num_classes=4)
    assert isinstance(samples, VideoSamples) and len(samples) == 4
    cases = [
        (good.astype(np.float32), "dtype float32"),
        (good[..., 0], "expected \\[N, T, H, W, 3\\]"),
        (good[:, :9], "has 9 frames per video"),
        (good[:3], "holds 3 videos"),
    ]
    for array, message in cases:
        np.save(tmp_path / "bad.npy", array)
        with pytest.raises(InputError, match=message):
            load_video_samples(tmp_path / "bad.npy", count=4, num_frames=16, resolution=8)
    np.save(tmp_path / "ok.npy", good)
    with pytest.raises(InputError, match="FVD needs at least 10"):
        load_video_samples(tmp_path / "ok.npy", count=4, num_frames=8)
    np.savez(path, videos=good, labels=np.array([0, 1, 2, 9]))
    with pytest.raises(InputError, match="labels must lie in 0..3"):
        load_video_samples(path, count=4, num_frames=16, num_classes=4)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="plain NumPy array"):
        load_video_samples(tmp_path / "objects.npy", count=1, num_frames=16)


def test_long_video_clip_takes_every_stride_th_frame_from_the_start():
    frame_ids = np.arange(130, dtype=np.uint8)
    video = np.broadcast_to(frame_ids[:, None, None, None], (130, 4, 4, 3))
    samples = VideoSamples(num_frames=16, stride=8, arrays=[video[None]])
    np.testing.assert_array_equal(samples.clip(0)[:, 0, 0, 0], np.arange(0, 121, 8))
