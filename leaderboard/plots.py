"""Quality-versus-cost scatter plots (speedup vs quality, FID vs parameters / sampling time, BLEU vs latency).

Each point links to its run page. Points of different comparability groups share a plot (a plot ranks
nothing) but carry their group as the point shape, so protocol differences stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import pandas as pd

from leaderboard.board import Group, MetricInfo, is_quality, is_speed


@dataclass(frozen=True)
class Axis:
    """One plottable quantity: a column of the group tables, with its title, scale, direction (None: neither
    way is better) and axis label format (d3: "~s" writes 100,000,000 as 100M)."""

    column: str
    title: str
    log: bool = False
    higher_is_better: bool | None = None
    fmt: str = "~g"


PARAMS_AXIS = Axis("params", "parameters", log=True, higher_is_better=False, fmt="~s")
TIME_AXIS = Axis("generate_seconds", "sampling time of the run (s)", log=True, higher_is_better=False)


def metric_axis(m: MetricInfo) -> Axis:
    return Axis(m.header, m.header, higher_is_better=m.higher_is_better)


def plot_frame(groups: list[Group], numbers: list[int] | None = None) -> pd.DataFrame:
    """All shown rows of a board, with their group as 'protocol' (P1, P2, ... or the given numbers)."""
    numbers = numbers or list(range(1, len(groups) + 1))
    frames = [g.table.assign(protocol=f"P{n}") for n, g in zip(numbers, groups)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def numeric_axes(frame: pd.DataFrame, metrics: list[MetricInfo]) -> list[Axis]:
    """Every plottable column with at least two values: the metrics, parameters, sampling time."""
    axes = [metric_axis(m) for m in metrics] + [PARAMS_AXIS, TIME_AXIS]
    return [a for a in axes if a.column in frame and frame[a.column].notna().sum() >= 2]


def default_charts(frame: pd.DataFrame, metrics: list[MetricInfo], primary: str | None) -> list[tuple[Axis, Axis]]:
    """Quality (y) against the board's speed metric, parameter count and sampling time (x), where present."""
    by_name = {m.name: m for m in metrics}
    quality = [m for m in metrics if is_quality(m)]
    speed = [m for m in metrics if is_speed(m)]
    y_metric = by_name[primary] if primary in by_name and is_quality(by_name[primary]) else (
        quality[0] if quality else None)
    if y_metric is None:
        return []
    y = metric_axis(y_metric)
    main_speed = by_name[primary] if primary in by_name and is_speed(by_name[primary]) else (
        speed[0] if speed else None)
    xs = ([metric_axis(main_speed)] if main_speed else []) + [PARAMS_AXIS, TIME_AXIS]
    return [(x, y) for x in xs
            if x.column in frame and (frame[x.column].notna() & frame[y.column].notna()).sum() >= 2][:2]


def pareto_front(x, y, x_higher_is_better: bool, y_higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (at least as good on both, better on one),
    in order of x.

    >>> pareto_front([1, 2, 3, 2], [3, 2, 1, 1], x_higher_is_better=True, y_higher_is_better=True)
    [0, 1, 2]
    """
    xs = [v if x_higher_is_better else -v for v in x]
    ys = [v if y_higher_is_better else -v for v in y]
    front = [i for i in range(len(xs))
             if not any(xs[j] >= xs[i] and ys[j] >= ys[i] and (xs[j] > xs[i] or ys[j] > ys[i])
                        for j in range(len(xs)))]
    return sorted(front, key=lambda i: x[i])


def scatter(frame: pd.DataFrame, x: Axis, y: Axis) -> alt.Chart:
    """A scatter of two columns; each point's href is its run page. Where both axes have a direction, a
    dashed line joins each protocol group's Pareto front."""
    data = pd.DataFrame({
        "x": frame[x.column], "y": frame[y.column], "label": frame["label"], "source": frame["source"],
        "protocol": frame["protocol"], "run": frame["run"],
    }).dropna(subset=["x", "y"]).reset_index(drop=True)
    x_scale = alt.Scale(type="log") if x.log and (data["x"] > 0).all() else alt.Scale(zero=False)
    x_enc = alt.X("x:Q", title=x.title, scale=x_scale, axis=alt.Axis(format=x.fmt))
    y_enc = alt.Y("y:Q", title=y.title, scale=alt.Scale(zero=False), axis=alt.Axis(format=y.fmt))
    points = (
        alt.Chart(data)
        .mark_point(size=90, filled=True)
        .encode(
            x=x_enc, y=y_enc,
            color=alt.Color("source:N", title="source"),
            shape=alt.Shape("protocol:N", title="protocol group"),
            href="run:N",
            tooltip=[alt.Tooltip("label:N"), alt.Tooltip("source:N"), alt.Tooltip("protocol:N"),
                     alt.Tooltip("x:Q", title=x.title, format=".4~g"),
                     alt.Tooltip("y:Q", title=y.title, format=".4~g")],
        )
    )
    layers = [points]
    if x.higher_is_better is not None and y.higher_is_better is not None:
        fronts = []
        for protocol, part in data.groupby("protocol", sort=False):
            idx = pareto_front(part["x"].tolist(), part["y"].tolist(), x.higher_is_better, y.higher_is_better)
            if len(idx) >= 2:
                fronts.append(part.iloc[idx].assign(order=range(len(idx))))
        if fronts:
            line = (alt.Chart(pd.concat(fronts, ignore_index=True)).mark_line(strokeDash=[5, 4], color="#888")
                    .encode(x=x_enc, y=y_enc, detail="protocol:N", order="order:Q"))
            layers.insert(0, line)
    return alt.layer(*layers).properties(title=f"{y.title} vs {x.title}", height=340)
