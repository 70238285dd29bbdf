"""The metric contract: a value with its direction, unit and version, and a distributed-safe accumulator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torchmetrics


@dataclass(frozen=True)
class MetricValue:
    """One number a task produces, self-describing enough to be ranked and displayed.

    `ci_low`/`ci_high` bound a 95% confidence interval where the metric has one.

    Args:
        name: the metric's name in the store (`fid`, `bleu`, ...).
        value: the number (None where a metric could not be computed).
        higher_is_better: the ranking direction.
        unit: what the number is in (`%`, `BLEU`, `fraction`, ...).
        version: bumped whenever the same inputs could give another number.
        ci_low: lower end of the 95% interval, if any.
        ci_high: upper end of the 95% interval, if any.
        description: how the number was computed (a signature, a protocol note).

    Raises:
        ValueError: for a value that is NaN or infinite (a bug upstream of the store, not a user's input).

    Example:
        >>> MetricValue("fid", 2.27, higher_is_better=False, version="1").value
        2.27
    """

    name: str
    value: float | None
    higher_is_better: bool
    unit: str = ""
    version: str = "1"
    ci_low: float | None = None
    ci_high: float | None = None
    description: str = ""

    def __post_init__(self):
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"metric {self.name} is not finite ({self.value}); refusing to store it")


class Accumulator(torchmetrics.Metric):
    """Base of ARBench's stateful metrics: torchmetrics' `Metric` (states with cross-rank reductions,
    `update`/`compute`) plus the description every stored number carries.

    Subclasses set the class attributes below, declare states with `add_state(..., dist_reduce_fx=...)`
    so that the result is the same for any batch size and world size, and return `MetricValue`s from
    `values()`. States are not synchronised across ranks unless `sync_on_compute=True` is passed.

    Args:
        kwargs: passed to `torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> class Mean(Accumulator):
        ...     metric_name, unit, higher_is_better = "mean", "", True
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        ...         self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")
        ...     def update(self, x):
        ...         self.total += x.sum()
        ...         self.count += x.numel()
        ...     def compute(self):
        ...         return self.total / self.count
        >>> metric = Mean()
        >>> metric.update(torch.tensor([1.0, 2.0]))
        >>> metric.update(torch.tensor([6.0]))
        >>> metric.values()[0].value
        3.0
    """

    metric_name: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    full_state_update: ClassVar[bool] = False

    def __init__(self, **kwargs):
        # The runner scores on rank 0 once every rank's samples are on disk; a task that spreads
        # feature extraction over ranks passes sync_on_compute=True to reduce the states itself.
        kwargs.setdefault("sync_on_compute", False)
        super().__init__(**kwargs)

    def values(self) -> list[MetricValue]:
        value = self.compute()
        return [MetricValue(self.metric_name, float(value), bool(self.higher_is_better), self.unit, self.version,
                            description=self.description)]
