"""Fréchet distance and feature statistics against the scipy/NumPy formulas ADM uses."""

import numpy as np
import pytest
import scipy.linalg
import torch

from harness.errors import InputError
from harness.metrics import FeatureStatistics, FrechetDistance, feature_statistics, frechet_distance


def adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """ADM evaluator.py's formula (scipy sqrtm of the product, eps retry, real part)."""
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def correlated_features(rng, n, d, scale=0.3, shift=0.1):
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * scale + shift


@pytest.mark.parametrize("d,n", [(16, 200), (64, 1000), (256, 2000)])
def test_matches_scipy_sqrtm_formula(d, n):
    rng = np.random.default_rng(d)
    m1, s1 = feature_statistics(rng.normal(size=(n, d)))
    m2, s2 = feature_statistics(correlated_features(rng, n, d))
    ours, ref = frechet_distance(m1, s1, m2, s2), adm_frechet(m1, s1, m2, s2)
    assert ours == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("n1,n2", [(30, 1000), (1000, 30), (30, 40)])
def test_singular_covariance_fewer_samples_than_dims(n1, n2):
    # Rank-deficient statistics (N < d) have no Cholesky factor: the other matrix is factored, or, when
    # both are singular, the eigh square root is used. The square roots of near-zero eigenvalues amplify
    # float64 noise (in scipy's sqrtm too), hence the looser tolerance.
    rng = np.random.default_rng(1)
    m1, s1 = feature_statistics(rng.normal(size=(n1, 64)))
    m2, s2 = feature_statistics(correlated_features(rng, n2, 64))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(adm_frechet(m1, s1, m2, s2), rel=1e-7)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(2)
    m, s = feature_statistics(correlated_features(rng, 500, 32))
    assert abs(frechet_distance(m, s, m, s)) < 1e-9 * np.trace(s)


def test_closed_form_diagonal_gaussians():
    # For diagonal covariances FD = sum (m1-m2)^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-14)


def test_eps_retry_is_reported(monkeypatch):
    import harness.metrics.frechet as frechet

    calls = []
    real = frechet.trace_sqrt_product

    def flaky(s1, s2):
        calls.append(1)
        return torch.tensor(float("nan"), dtype=torch.float64) if len(calls) == 1 else real(s1, s2)

    monkeypatch.setattr(frechet, "trace_sqrt_product", flaky)
    messages = []
    value = frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), log=messages.append)
    assert len(calls) == 2 and "retried with 1e-06" in messages[0]
    assert value == pytest.approx(0.0, abs=1e-5)  # the offset enters the root only, as in ADM


def test_rejects_non_finite_and_mismatched_inputs():
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.array([np.nan, 0.0]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(InputError, match="same feature layer"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_statistics_match_numpy_cov():
    feats = np.random.default_rng(3).normal(size=(100, 8)) * 3 + 5
    mu, sigma = feature_statistics(feats)
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-14)  # unbiased, as ADM


def test_accumulator_batch_size_and_world_size_invariance():
    rng = np.random.default_rng(4)
    feats = torch.from_numpy(correlated_features(rng, 301, 12, shift=2.0))
    ref_mu, ref_sigma = feature_statistics(feats.numpy())

    def accumulate(chunks):
        acc = FeatureStatistics(12)
        for chunk in chunks:
            acc.update(chunk)
        return acc

    one = accumulate([feats]).statistics()
    for bs in (1, 7, 64):
        mu, sigma = accumulate(feats.split(bs)).statistics()
        np.testing.assert_allclose(mu, one[0], rtol=1e-12)
        np.testing.assert_allclose(sigma, one[1], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(one[1], ref_sigma, rtol=1e-11, atol=1e-12)
    # Two "ranks" holding interleaved halves, merged with the states' own reductions (sum).
    rank0, rank1 = accumulate(feats[0::2].split(5)), accumulate(feats[1::2].split(9))
    rank0.merge_state(rank1)
    mu, sigma = rank0.statistics()
    np.testing.assert_allclose(mu, one[0], rtol=1e-12)
    np.testing.assert_allclose(sigma, one[1], rtol=1e-11, atol=1e-12)


def test_frechet_accumulator_matches_function():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(400, 10)), correlated_features(rng, 300, 10)
    ref_mu, ref_sigma = feature_statistics(real)
    metric = FrechetDistance(ref_mu, ref_sigma, "fd_test")
    for chunk in np.array_split(fake, 4):
        metric.update(torch.from_numpy(chunk))
    [value] = metric.values()
    assert value.name == "fd_test" and value.higher_is_better is False
    assert value.value == pytest.approx(frechet_distance(*feature_statistics(fake), ref_mu, ref_sigma), rel=1e-10)
