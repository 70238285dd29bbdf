"""Inception Score and Precision/Recall against ADM's NumPy formulas and hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from harness.errors import InputError
from harness.metrics import InceptionScore, PrecisionRecall, inception_score, precision_recall


def split_scores(logits, split_size):
    """evaluations/evaluator.py compute_inception_score's per-split scores (softmax, contiguous splits)."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i:i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return scores


def adm_inception_score(logits, split_size):
    """ADM reports the mean over splits only."""
    return float(np.mean(split_scores(logits, split_size)))


def adm_precision_recall(real, fake, k=3):
    """evaluator.py ManifoldEstimator (one block, float64): radii by np.partition, then evaluate_pr."""
    def sq(u, v):
        return np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :], 0)

    r_real = np.partition(sq(real, real), k, axis=1)[:, k]
    r_fake = np.partition(sq(fake, fake), k, axis=1)[:, k]
    d = sq(real, fake)
    return float((d <= r_real[:, None]).any(0).mean()), float((d <= r_fake[None, :]).any(1).mean())


def test_inception_score_matches_adm_formula():
    logits = np.random.default_rng(0).normal(size=(1000, 50)) * 3
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(adm_inception_score(logits, 100), rel=1e-12)
    # the spread ADM does not print: openai/improved-gan's inception_score.py `np.std(scores)` (ddof 0)
    assert std == pytest.approx(np.std(split_scores(logits, 100)), rel=1e-12) and std > 1e-3


def test_inception_score_split_size_is_adms():
    # ADM fixes the split size (5,000), not the number of splits: at N != 10 * split_size the two differ.
    logits = np.random.default_rng(4).normal(size=(2500, 200)) * 3
    adm = adm_inception_score(logits, 1000)  # splits of 1000, 1000, 500
    assert inception_score(logits, split_size=1000)[0] == pytest.approx(adm, rel=1e-12)
    assert inception_score(logits, splits=10)[0] != pytest.approx(adm, rel=1e-3)  # the old task's rule
    assert inception_score(logits[:2000], split_size=200) == inception_score(logits[:2000], splits=10)
    assert inception_score(logits[:300], split_size=5000)[0] == pytest.approx(adm_inception_score(logits[:300], 5000),
                                                                             rel=1e-12)  # one split


def test_inception_score_hand_cases():
    # Each sample certain of a distinct class, uniform marginal over C classes: IS = C.
    confident = np.full((8, 8), -1e4)
    np.fill_diagonal(confident, 0)
    assert inception_score(confident, splits=1) == pytest.approx((8.0, 0.0), abs=1e-9)
    # Identical predictions: KL = 0, IS = 1.
    assert inception_score(np.tile([1.0, 2.0, 3.0], (6, 1)), splits=2)[0] == pytest.approx(1.0, abs=1e-12)
    # Splits are contiguous, not shuffled: [A, A, B, B] in 2 splits gives 1 each; interleaved gives 2.
    a, b = [0.0, -1e4], [-1e4, 0.0]
    assert inception_score(np.array([a, a, b, b]), splits=2)[0] == pytest.approx(1.0, abs=1e-9)
    assert inception_score(np.array([a, b, a, b]), splits=2)[0] == pytest.approx(2.0, abs=1e-9)


def test_inception_score_rejects_bad_input():
    with pytest.raises(InputError, match="N >= splits"):
        inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(InputError, match="NaN"):
        inception_score(np.array([[np.nan, 0.0]] * 10), splits=2)


def test_precision_recall_matches_adm_formula():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(size=(400, 16)) * 1.3 + 0.4
    ours = precision_recall(real, fake, k=3, block_size=128)
    assert ours == pytest.approx(adm_precision_recall(real, fake), abs=1e-12)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1


def adm_fp16_distances(u, v):
    """evaluator.py DistanceBlock: squares, norms, U V^T and the sums in float16 (reductions accumulated in
    float32 and rounded, as TF does on a GPU), clamped at 0; the whole block in float32 if any is not finite."""
    u16, v16 = u.astype(np.float16), v.astype(np.float16)
    norm_u = np.square(u16).astype(np.float32).sum(1).astype(np.float16)
    norm_v = np.square(v16).astype(np.float32).sum(1).astype(np.float16)
    uv = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
    d = np.maximum(norm_u[:, None] - np.float16(2) * uv + norm_v[None, :], np.float16(0))
    if not np.isfinite(d).all():
        u, v = u.astype(np.float32), v.astype(np.float32)
        d = np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :], 0)
    return d.astype(np.float32)


def adm_fp16_precision_recall(real, fake, k=3):
    """ManifoldEstimator.manifold_radii + evaluate_pr on ADM's float16 distance blocks (one block)."""
    r_real = np.partition(adm_fp16_distances(real, real), k, axis=1)[:, k]
    r_fake = np.partition(adm_fp16_distances(fake, fake), k, axis=1)[:, k]
    d = adm_fp16_distances(real, fake)
    return float((d <= r_real[:, None]).any(0).mean()), float((d <= r_fake[None, :]).any(1).mean())


def inception_like_features(rng, n, shift, scale, d=2048, rank=32):
    """Non-negative, correlated 2048-d features with pool_3's squared norms (about 400)."""
    basis = np.random.default_rng(99).normal(size=(rank, d)) / np.sqrt(rank)
    z = rng.normal(size=(n, rank)) * scale + shift
    return np.logaddexp(0, 1.2 * (z @ basis) - 1.5).astype(np.float32)


def test_precision_recall_float16_is_adms_arithmetic():
    # At pool_3's magnitudes float16 steps by 0.25 near the radii, so ADM's numbers and exact float32
    # distances differ by a point or two in 400; the float16 mode reproduces ADM's.
    differs = 0
    for seed in (0, 2):
        rng = np.random.default_rng(seed)
        real, fake = inception_like_features(rng, 400, 0.0, 1.0), inception_like_features(rng, 400, 0.15, 0.9)
        adm = adm_fp16_precision_recall(real, fake)
        assert precision_recall(real, fake, distance_dtype=torch.float16, device="cpu") == pytest.approx(adm, abs=1e-12)
        differs += precision_recall(real, fake, device="cpu") != pytest.approx(adm, abs=1e-12)
    assert differs  # float32 distances, the old task's, are not ADM's numbers


def test_precision_recall_float16_overflow_falls_back_to_float32():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(40, 8)) * 200, rng.normal(size=(30, 8)) * 200  # squared norms > 65504
    assert precision_recall(real, fake, distance_dtype=torch.float16, block_size=16) == pytest.approx(
        adm_precision_recall(real, fake), abs=1e-12)


def test_precision_recall_hand_case():
    # 1-D points; k=1 radius = squared distance to the nearest other point.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # radii 1, 1, 1, 1
    fake = np.array([[0.5], [2.9], [10.0], [11.0]])  # radii 5.76, 5.76, 1, 1
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.5)  # 0.5 and 2.9 lie within distance 1 of a real point
    assert recall == pytest.approx(1.0)  # every real point lies within 2.4 of 0.5 or 2.9
    assert precision_recall(real, real, k=1) == pytest.approx((1.0, 1.0))


def test_precision_recall_block_size_invariance_and_fp16_mode():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) + 0.3
    full = precision_recall(real, fake, block_size=10_000)
    assert precision_recall(real, fake, block_size=7) == full
    half = precision_recall(real, fake, distance_dtype=torch.float16)
    assert half == pytest.approx(full, abs=0.02)  # ADM's fp16 distances move a few borderline points


def test_accumulators_batch_and_rank_invariance():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(120, 20)) * 2)
    feats = torch.from_numpy(rng.normal(size=(120, 6)))
    real = rng.normal(size=(90, 6))
    expected_is = inception_score(logits, 10)
    expected_pr = precision_recall(real, feats)

    def fill(metric, data, index_sets):
        for idx in index_sets:
            metric.update(data[idx], torch.as_tensor(idx))
        return metric

    order = np.arange(120)
    batches = [order[i:i + 13] for i in range(0, 120, 13)]
    rank0 = fill(InceptionScore(10), logits, [order[0::2][i:i + 11] for i in range(0, 60, 11)])
    rank1 = fill(InceptionScore(10), logits, [order[1::2][i:i + 5] for i in range(0, 60, 5)])
    rank0.merge_state(rank1)
    for metric in (fill(InceptionScore(10), logits, batches), rank0):
        mean, std = (v.value for v in metric.values())
        assert (mean, std) == pytest.approx(expected_is, rel=1e-12)
    pr = fill(PrecisionRecall(real), feats, batches[::-1]).values()
    assert [v.name for v in pr] == ["precision", "recall"]
    assert (pr[0].value, pr[1].value) == pytest.approx(expected_pr)
    assert math.isfinite(pr[0].value)
