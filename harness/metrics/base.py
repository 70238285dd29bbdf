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
