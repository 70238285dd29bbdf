"""Inception Score and Precision/Recall with the conventions of ADM's evaluator (guided-diffusion
`evaluations/evaluator.py`), in float64/float32 PyTorch.

- `inception_score`: softmax over the (bias-free) logits, contiguous *unshuffled* splits, mean of
  exp(mean KL(p(y|x) || p(y))) over the splits. ADM fixes the split *size* (5,000 rows,
  `ADM_IS_SPLIT_SIZE`), not the number of splits: pass `split_size=5000` for ADM's number at any
  sample count (at 50,000 samples it equals 10 splits). (torch-fidelity shuffles with a seed;
  torchmetrics shuffles unseeded.)
- `precision_recall`: Kynkäänniemi et al. (2019) k-NN manifolds, k=3: the radius of a point is its
  squared Euclidean distance to its k-th nearest neighbour in its own set (itself excluded); precision
  is the fraction of samples inside some reference ball, recall the fraction of references inside some
  sample ball. Computed in 10,000 x 10,000 blocks as ADM does. ADM's distances are float16
  (`distance_dtype=torch.float16`, each block redone in float32 if it overflows): pool_3 squared norms
  are in the hundreds, where float16 steps by 0.25-0.5, so ties at the radius become common and the
  fractions move by up to a few tenths of a percent against exact float32 distances (the function's default).

The accumulators keep every row with its sample index (`cat` states), so results depend neither on
batch size nor on the number of ranks: splits and neighbourhoods are formed in sample order.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from harness.errors import InputError
from harness.metrics.base import Accumulator, MetricValue

#: ADM's ManifoldEstimator settings.
PR_NEIGHBOURHOOD = 3
PR_BLOCK_SIZE = 10_000
#: ADM's `compute_inception_score(split_size=5000)`.
ADM_IS_SPLIT_SIZE = 5000


def _tensor(x, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def inception_score(logits, splits: int = 10, *, split_size: int | None = None) -> tuple[float, float]:
    """(mean, std) over contiguous splits of exp(E_x KL(p(y|x) || p(y))), computed in float64.

    `logits` (N, C) are unnormalised class scores; ADM uses pool3 @ W^T without the bias (1008 classes).
    Split i holds rows [i*s, (i+1)*s), the last one possibly shorter, as ADM's `range(0, N, split_size)`:
    s = `split_size` when given (ADM: 5,000), otherwise s = ceil(N / splits).

    Args:
        logits: (N, C) array or tensor.
        splits: number of contiguous splits (ignored when `split_size` is given).
        split_size: rows per split (ADM: `ADM_IS_SPLIT_SIZE`).

    Returns:
        (mean, std) over the splits, floats; std is the population standard deviation (0 for one split).

    Raises:
        InputError: when the logits are not (N, C) with N >= splits, are not finite, or `split_size` < 1.

    Example:
        >>> mean, std = inception_score(torch.eye(4) * 50, splits=1)  # four confident, distinct classes
        >>> round(mean, 4), std
        (4.0, 0.0)
    """
    logits = _tensor(logits, torch.float64)
    if split_size is not None:
        if split_size < 1:
            raise InputError(f"Inception Score split_size must be >= 1; got {split_size}.")
        splits = max(1, math.ceil(logits.shape[0] / split_size))
    if logits.ndim != 2 or logits.shape[0] < splits or splits < 1:
        raise InputError(f"Inception Score needs (N, classes) logits with N >= splits ({splits}); "
                         f"got shape {tuple(logits.shape)}.")
    if not bool(torch.isfinite(logits).all()):
        raise InputError("Inception Score: the logits contain NaN or infinity.")
    log_probs = torch.log_softmax(logits, dim=1)
    size = split_size if split_size is not None else math.ceil(logits.shape[0] / splits)
    scores = []
    for part in log_probs.split(size):
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    std = float(values.std(unbiased=False)) if len(values) > 1 else 0.0
    return float(values.mean()), std


@contextmanager
def _float32_accumulation() -> Iterator[None]:
    """TF's float16 matmuls (ADM's) accumulate in float32; cuBLAS may reduce in float16 unless told not to."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_fp16_reduced_precision_reduction
    matmul.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_fp16_reduced_precision_reduction = previous


def pairwise_squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 by the expansion ADM uses (|a|^2 - 2 a.b + |b|^2), clamped at 0.

    Args:
        a: (N, d) rows.
        b: (M, d) rows.

    Returns:
        (N, M) squared distances in the inputs' dtype.

    Example:
        >>> pairwise_squared_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0], [0.0, 1.0]])).tolist()
        [[25.0, 1.0]]
    """
    dist = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return dist.clamp_min(0)


def _distances(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    with _float32_accumulation():
        dist = pairwise_squared_distances(a.to(dtype), b.to(dtype)).float()
    if dtype != torch.float32 and not bool(torch.isfinite(dist).all()):  # ADM's fp16 overflow fallback
        dist = pairwise_squared_distances(a.float(), b.float())
    return dist


def manifold_radii(features: torch.Tensor, k: int = PR_NEIGHBOURHOOD, block_size: int = PR_BLOCK_SIZE,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest other row (position k of the sorted row, self at 0).

    Args:
        features: (N, d) rows, N > k.
        k: the neighbour whose distance is the radius.
        block_size: rows per distance block (ADM: 10,000).
        dtype: the distances' arithmetic (ADM: float16).

    Returns:
        (N,) float32 squared radii.

    Raises:
        InputError: when there are no more than k rows.

    Example:
        >>> manifold_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 4.0]
    """
    if features.shape[0] <= k:
        raise InputError(f"Precision/Recall with k={k} needs more than {k} feature rows per set; "
                         f"got {features.shape[0]}.")
    # Each row block x column block is one distance call, as ADM's, so the float16 overflow fallback
    # applies to the same blocks.
    radii = [torch.kthvalue(torch.cat([_distances(rows, cols, dtype) for cols in features.split(block_size)], dim=1),
                            k + 1, dim=1).values
             for rows in features.split(block_size)]
    return torch.cat(radii)


def precision_recall(real_features, fake_features, k: int = PR_NEIGHBOURHOOD, *,
                     block_size: int = PR_BLOCK_SIZE, distance_dtype: torch.dtype = torch.float32,
                     device: str | torch.device | None = None) -> tuple[float, float]:
    """Improved Precision and Recall (Kynkäänniemi et al. 2019) as ADM computes them: (precision, recall).

    Precision: fraction of fake rows within the k-NN ball of some real row. Recall: fraction of real rows
    within the k-NN ball of some fake row. Balls are closed (<=), radii are squared distances.
    `distance_dtype=torch.float16` is ADM's arithmetic (its published numbers); float32 is exact.
    The reference set comes first, as in ADM's evaluator (`ManifoldEstimator` of the reference batch).

    Args:
        real_features: (N, d) reference features.
        fake_features: (M, d) sample features.
        k: the neighbourhood size (ADM: 3).
        block_size: rows per distance block (ADM: 10,000).
        distance_dtype: the distances' arithmetic.
        device: where to compute (default: CUDA when available).

    Returns:
        (precision, recall), fractions.

    Raises:
        InputError: when the sets are not (N, d) of one d, hold NaN or infinity, or have no more than k rows.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> fake = torch.tensor([[0.5], [1.5], [10.0], [11.0]])
        >>> precision_recall(real, fake, k=1, device="cpu")
        (0.5, 0.75)
    """
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    real, fake = _tensor(real_features, torch.float32, device), _tensor(fake_features, torch.float32, device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise InputError(f"Precision/Recall needs two (N, d) feature sets of the same d; got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}.")
    if not (bool(torch.isfinite(real).all()) and bool(torch.isfinite(fake).all())):
        raise InputError("Precision/Recall: the features contain NaN or infinity.")
    real_radii = manifold_radii(real, k, block_size, distance_dtype)
    fake_radii = manifold_radii(fake, k, block_size, distance_dtype)
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)
    for start in range(0, real.shape[0], block_size):
        rows = slice(start, start + block_size)
        for col_start in range(0, fake.shape[0], block_size):
            cols = slice(col_start, col_start + block_size)
            dist = _distances(real[rows], fake[cols], distance_dtype)
            real_covered[rows] |= (dist <= fake_radii[cols][None, :]).any(dim=1)
            fake_inside[cols] |= (dist <= real_radii[rows][:, None]).any(dim=0)
    return float(fake_inside.double().mean()), float(real_covered.double().mean())


class _OrderedRows(Accumulator):
    """Keeps (index, row) pairs from every batch and rank; `rows()` returns them in sample order."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("data", default=[], dist_reduce_fx="cat")

    def update(self, rows: torch.Tensor, index: torch.Tensor) -> None:
        """`rows` (B, d) and the global sample index (B,) of each row."""
        self.data.append(_tensor(rows, torch.float64))
        self.index.append(_tensor(index, torch.int64))

    def rows(self) -> torch.Tensor:
        data = torch.cat(self.data) if isinstance(self.data, list) else self.data
        index = torch.cat(self.index) if isinstance(self.index, list) else self.index
        return data[torch.argsort(index)]


class InceptionScore(_OrderedRows):
    """Inception Score (ADM convention) of bias-free Inception logits; `values()` gives mean and std.

    Rows are kept with their sample index and scored in sample order, so batching and ranks do not matter.

    Args:
        splits: number of contiguous splits.
        metric_name: the stored metric's name (default `inception_score`).
        description: the stored metric's description.
        kwargs: passed to `torchmetrics.Metric`.

    Raises:
        InputError: (from `compute`) as `inception_score`.

    Example:
        >>> metric = InceptionScore(splits=1)
        >>> metric.update(torch.eye(4)[2:] * 50, torch.tensor([2, 3]))
        >>> metric.update(torch.eye(4)[:2] * 50, torch.tensor([0, 1]))
        >>> [round(v.value, 4) for v in metric.values()]
        [4.0, 0.0]
    """

    metric_name = "inception_score"
    higher_is_better = True
    version = "1"
    description = "Inception Score, ADM convention (softmax of bias-free logits, 10 contiguous splits)"

    def __init__(self, splits: int = 10, metric_name: str | None = None, description: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.splits = splits
        self.metric_name = metric_name or self.metric_name
        self.description = description or self.description

    def compute(self) -> torch.Tensor:
        return torch.tensor(inception_score(self.rows(), self.splits), dtype=torch.float64)

    def values(self) -> list[MetricValue]:
        mean, std = (float(v) for v in self.compute())
        return [MetricValue(self.metric_name, mean, True, "", self.version, description=self.description),
                MetricValue(f"{self.metric_name}_std", std, False, "", self.version,
                            description=f"standard deviation over the {self.splits} splits")]


class PrecisionRecall(_OrderedRows):
    """Precision and Recall of accumulated sample features against fixed reference features.

    Args:
        real_features: (N, d) reference features.
        k: the neighbourhood size.
        prefix: prepended to the stored names (`precision`, `recall`).
        kwargs: passed to `torchmetrics.Metric`.

    Raises:
        InputError: (from `compute`) as `precision_recall`.

    Example:
        >>> metric = PrecisionRecall(torch.tensor([[0.0], [1.0], [2.0], [3.0]]), k=1)
        >>> metric.update(torch.tensor([[0.5], [1.5], [10.0], [11.0]]), torch.arange(4))
        >>> [(v.name, v.value) for v in metric.values()]
        [('precision', 0.5), ('recall', 0.75)]
    """

    metric_name = "precision"
    higher_is_better = True
    version = "1"

    def __init__(self, real_features, k: int = PR_NEIGHBOURHOOD, prefix: str = "", **kwargs):
        super().__init__(**kwargs)
        self.real_features = _tensor(real_features, torch.float32)
        self.k, self.prefix = k, prefix

    def compute(self) -> torch.Tensor:
        return torch.tensor(precision_recall(self.real_features, self.rows(), self.k), dtype=torch.float64)

    def values(self) -> list[MetricValue]:
        precision, recall = (float(v) for v in self.compute())
        what = f"Kynkäänniemi et al. k={self.k}"
        return [MetricValue(f"{self.prefix}precision", precision, True, "fraction", self.version,
                            description=f"Precision ({what}): samples inside the reference manifold"),
                MetricValue(f"{self.prefix}recall", recall, True, "fraction", self.version,
                            description=f"Recall ({what}): references inside the sample manifold")]
