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
    """One plottable quantity: a column of the group tables, with its title and scale."""

    column: str
    title: str
    log: bool = False


PARAMS_AXIS = Axis("params", "parameters", log=True)
TIME_AXIS = Axis("generate_seconds", "sampling time of the run (s)", log=True)


def plot_frame(groups: list[Group]) -> pd.DataFrame:
    """All shown rows of a board, with their group as 'protocol' (P1, P2, ...)."""
    frames = [g.table.assign(protocol=f"P{i}") for i, g in enumerate(groups, start=1)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def numeric_axes(frame: pd.DataFrame, metrics: list[MetricInfo]) -> list[Axis]:
    """Every plottable column with at least two values: the metrics, parameters, sampling time."""
    axes = [Axis(m.header, m.header) for m in metrics] + [PARAMS_AXIS, TIME_AXIS]
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
    y = Axis(y_metric.header, y_metric.header)
    main_speed = by_name[primary] if primary in by_name and is_speed(by_name[primary]) else (
        speed[0] if speed else None)
    xs = ([Axis(main_speed.header, main_speed.header)] if main_speed else []) + [PARAMS_AXIS, TIME_AXIS]
    return [(x, y) for x in xs
            if x.column in frame and (frame[x.column].notna() & frame[y.column].notna()).sum() >= 2][:2]


def scatter(frame: pd.DataFrame, x: Axis, y: Axis) -> alt.Chart:
    """A scatter of two columns; each point's href is its run page."""
    data = pd.DataFrame({
        "x": frame[x.column], "y": frame[y.column], "label": frame["label"], "source": frame["source"],
        "protocol": frame["protocol"], "run": frame["run"],
    }).dropna(subset=["x", "y"])
    x_scale = alt.Scale(type="log") if x.log and (data["x"] > 0).all() else alt.Scale(zero=False)
    return (
        alt.Chart(data)
        .mark_point(size=90, filled=True)
        .encode(
            x=alt.X("x:Q", title=x.title, scale=x_scale),
            y=alt.Y("y:Q", title=y.title, scale=alt.Scale(zero=False)),
            color=alt.Color("source:N", title="source"),
            shape=alt.Shape("protocol:N", title="protocol group"),
            href="run:N",
            tooltip=[alt.Tooltip("label:N"), alt.Tooltip("source:N"), alt.Tooltip("protocol:N"),
                     alt.Tooltip("x:Q", title=x.title, format=".4g"), alt.Tooltip("y:Q", title=y.title, format=".4g")],
        )
        .properties(title=f"{y.title} vs {x.title}", height=340)
    )
