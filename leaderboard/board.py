"""Board logic, free of Streamlit: filtering, comparability groups, ranking with ties, paper gaps, CSV.

A board is one task. Its rows are grouped by evaluation signature (protocol + scoring, without the
method's settings): numbers are ranked only inside a group, never across groups. Inside a group the
rank of a row is 1 + the number of rows that are better than it *beyond the confidence intervals*
(the lower bound of the better row above the upper bound of this one, for higher-is-better); rows that
cannot be told apart share a rank. A row without an interval is treated as the point [v, v].
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from harness.diff import distinguishing_settings
from harness.signature import Signature
from leaderboard.data import StoreSnapshot

SOURCE_NAMES = {
    "reproduced": "reproduced by ARBench",
    "submitted": "submitted by the author",
    "reported": "reported in a paper",
}
FAMILY_NAMES = {
    "raster-ar": "raster AR",
    "next-scale": "next-scale",
    "masked": "masked / parallel",
    "parallel": "masked / parallel",
    "nat": "NAT",
    "diffusion": "diffusion reference",
}


@dataclass(frozen=True)
class MetricInfo:
    """A metric column: its name, direction and unit (from the stored metric rows, never from the UI)."""

    name: str
    higher_is_better: bool
    unit: str = ""

    @property
    def header(self) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        return f"{self.name} {arrow}" + (f" ({self.unit})" if self.unit else "")

    @property
    def ci_header(self) -> str:
        return f"{self.name} 95% CI"


@dataclass(frozen=True)
class Filters:
    """What the visitor narrowed the board to; empty means everything."""

    families: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    hardware: tuple[str, ...] = ()
    params_range: tuple[float, float] | None = None
    search: str = ""


#: Columns a group table keeps for links, plots and the CSV export but never shows.
HIDDEN_COLUMNS = ("run_id", "generate_seconds", "eval_signature_hash")
#: Decoding boards: a metric the decoding task stores only for lossy strategies (its quality track). Runs
#: that record `lossless` in their provenance are placed by that declaration instead.
LOSSY_TRACK_METRICS = ("quality_target_nll",)
TRACK_NAMES = {
    "lossless": "lossless decoding: every output is checked against greedy AR decoding",
    "lossy": "lossy decoding: outputs may differ from AR decoding, so these rows are ranked apart; judge each "
             "speedup with its exact match and target NLL",
}


@dataclass
class Group:
    """Rows of one board that share an evaluation signature, ranked against each other.

    `view` is the table as shown: without the hidden columns and the columns that are empty in this group
    (computed once, so a cached board costs nothing to show again).
    """

    eval_signature_hash: str
    table: pd.DataFrame
    metrics: list[MetricInfo] = field(default_factory=list)
    ranked_by: MetricInfo | None = None
    track: str = ""  # "lossless" or "lossy" on a decoding board with both kinds of strategy, else ""
    view: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table = self.table
        redundant = set()
        if table["method"].eq(table["label"]).all():
            redundant.add("method")  # the label says it already
        if "runs" in table and table["runs"].le(1).all():
            redundant.add("runs")
        self.view = table[[c for c in table.columns
                           if c not in HIDDEN_COLUMNS and c not in redundant and not _all_empty(table[c])]]

    @property
    def key(self) -> str:
        """Tells groups of one board apart (in widget keys and links): the hash, and the track if any."""
        return self.eval_signature_hash + (f"-{self.track}" if self.track else "")

    @property
    def sources(self) -> list[str]:
        return sorted(set(self.table["source"]))

    @property
    def export_columns(self) -> list[str]:
        """The shown columns with the run id in place of the run-page link, and the comparability key (the
        evaluation signature hash; the app adds the signature's text as `eval_signature`)."""
        return [c for c in self.view.columns if c != "run"] + ["run_id", "eval_signature_hash"]


def _all_empty(column: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(column):
        return bool(column.isna().all())
    return bool(column.fillna("").eq("").all())


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family or "—")


def run_link(run_id: str) -> str:
    """The relative URL of a run page (the app reads `?run=`)."""
    return f"?run={quote(str(run_id), safe='')}"


def run_links(run_ids: pd.Series) -> pd.Series:
    """`run_link` for a column; store ids are hex, so only odd ids take the slow quoting path."""
    links = "?run=" + run_ids
    odd = ~run_ids.str.fullmatch(r"[A-Za-z0-9_-]+").fillna(False).astype(bool)
    if odd.any():
        links[odd] = run_ids[odd].map(run_link)
    return links


def _display(codes: pd.Series, names: dict[str, str]) -> pd.Series:
    return codes.map(names).fillna(codes)


def primary_metric(snapshot: StoreSnapshot, task: str, metrics: Sequence[MetricInfo]) -> str | None:
    row = snapshot.tasks[snapshot.tasks["task"] == task]
    declared = row["primary_metric"].iloc[0] if len(row) else None
    names = [m.name for m in metrics]
    if declared in names:
        return declared
    return names[0] if names else None


def task_runs(snapshot: StoreSnapshot, task: str, status: str = "finished") -> pd.DataFrame:
    runs = snapshot.runs
    return runs[(runs["task"] == task) & (runs["status"] == status)]


def apply_filters(runs: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    keep = pd.Series(True, index=runs.index)
    if filters.families:
        keep &= runs["family"].isin(filters.families)
    if filters.sources:
        keep &= runs["source"].isin(filters.sources)
    if filters.hardware:
        keep &= runs["hardware"].isin(filters.hardware)
    if filters.params_range is not None:
        low, high = filters.params_range
        keep &= runs["params"].between(low, high)  # rows without a parameter count drop out of a range filter
    if filters.search.strip():
        needle = filters.search.strip().lower()
        keep &= (runs["label"].str.lower().str.contains(needle, regex=False)
                 | runs["method"].str.lower().str.contains(needle, regex=False))
    return runs[keep]


def metric_infos(metrics: pd.DataFrame, primary: str | None = None) -> list[MetricInfo]:
    """One entry per metric name, primary first, the rest in the order they were first stored."""
    if metrics.empty:
        return []
    first = metrics.drop_duplicates("name")
    infos = [MetricInfo(r.name, bool(r.higher_is_better), r.unit or "") for r in first.itertuples(index=False)]
    infos.sort(key=lambda m: m.name != primary)
    return infos


def rank_with_ties(values: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                   higher_is_better: bool) -> np.ndarray:
    """Competition ranks where only rows separable by their intervals get different ranks.

    rank(i) = 1 + #{j : j is better than i beyond both intervals}; NaN values get no rank (NaN).
    """
    v = np.asarray(values, dtype=float)
    lo = np.where(np.isnan(np.asarray(lows, dtype=float)), v, np.asarray(lows, dtype=float))
    hi = np.where(np.isnan(np.asarray(highs, dtype=float)), v, np.asarray(highs, dtype=float))
    if higher_is_better:
        better = lo[None, :] > hi[:, None]  # better[i, j]: j's lower bound above i's upper bound
    else:
        better = hi[None, :] < lo[:, None]
    valid = ~np.isnan(v)
    better &= valid[None, :]
    ranks = 1.0 + better.sum(axis=1)
    ranks[~valid] = np.nan
    return ranks


def wide_metrics(metrics: pd.DataFrame, run_ids: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(value, ci_low, ci_high) frames indexed by run id with one column per metric name."""
    subset = metrics[metrics["run_id"].isin(run_ids)].drop_duplicates(["run_id", "name"])
    wide = subset.set_index(["run_id", "name"])[["value", "ci_low", "ci_high"]].unstack("name")
    names = list(dict.fromkeys(subset["name"]))
    parts = [wide[col].reindex(index=run_ids, columns=names) if not wide.empty
             else pd.DataFrame(index=run_ids, columns=names, dtype=float) for col in ("value", "ci_low", "ci_high")]
    return parts[0], parts[1], parts[2]


def paper_values(runs: pd.DataFrame, values: pd.DataFrame, metric: str | None) -> dict[str, float]:
    """method -> the paper-reported value of `metric` on this board (the first reported row per method)."""
    if metric is None or metric not in values.columns:
        return {}
    reported = runs[(runs["source"] == "reported") & (runs["method"] != "")]
    found: dict[str, float] = {}
    for run_id, method in zip(reported["run_id"], reported["method"]):
        value = values.at[run_id, metric]
        if method not in found and not pd.isna(value):
            found[method] = float(value)
    return found


def build_groups(snapshot: StoreSnapshot, task: str, filters: Filters = Filters()) -> tuple[list[Group], str | None]:
    """The board of `task`: comparability groups (largest with reproduced rows first) and the primary metric."""
    all_runs = task_runs(snapshot, task).set_index("run_id", drop=False)
    task_metrics = snapshot.metrics[snapshot.metrics["run_id"].isin(all_runs.index)]
    # Tracks and settings come from the unfiltered board, so a filter never renames or re-labels a row.
    all_runs = all_runs.assign(track=decoding_tracks(all_runs, task_metrics), settings="")
    for _, members in all_runs.groupby("eval_signature_hash", sort=False):  # across tracks: top_k=1 vs 3
        all_runs.loc[members.index, "settings"] = distinguishing_settings(members["signature"].tolist())
    runs = apply_filters(all_runs, filters)
    infos = metric_infos(task_metrics, None)
    primary = primary_metric(snapshot, task, infos)
    infos = metric_infos(task_metrics, primary)
    values, lows, highs = wide_metrics(task_metrics, all_runs.index)
    papers = paper_values(all_runs, values, primary)
    if runs.empty:
        return [], primary
    groups = []
    for (sig_hash, track), members in runs.groupby(["eval_signature_hash", "track"], sort=False):
        members = collapse_reruns(members)
        group_values = values.loc[members.index]
        present = headline_order([m for m in infos if group_values[m.name].notna().any()], primary)
        table, ranked = _group_table(members, group_values, lows.loc[members.index], highs.loc[members.index],
                                     present, primary, papers)
        groups.append(Group(sig_hash, table, present, ranked, track))
    groups.sort(key=lambda g: ("reproduced" not in g.sources and "submitted" not in g.sources, g.track == "lossy",
                               -len(g.table)))
    return groups, primary


def decoding_tracks(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.Series:
    """"lossy" / "lossless" per run of a comparability group that has lossy decoding runs, else "".

    A run's provenance `lossless` (declared by its strategy) decides; a run without it is lossy when it has
    the decoding task's lossy-track metric. Paper rows keep "" (their papers' claims are not checked here).
    Decided per evaluation signature, so a group's tracks do not depend on the board's other groups."""
    if runs.empty:
        return pd.Series("", index=runs.index, dtype=object)
    declared = runs["lossless"] if "lossless" in runs else pd.Series(None, index=runs.index, dtype=object)
    known = declared.notna()
    marked = runs["run_id"].isin(metrics.loc[metrics["name"].isin(LOSSY_TRACK_METRICS), "run_id"])
    own = runs["source"] != "reported"
    lossy = ((known & ~declared.where(known, True).astype(bool)) | (~known & marked)) & own
    split = lossy.groupby(runs["eval_signature_hash"]).transform("any") & own
    return pd.Series(np.where(split, np.where(lossy, "lossy", "lossless"), ""), index=runs.index, dtype=object)


def collapse_reruns(runs: pd.DataFrame) -> pd.DataFrame:
    """Identical reruns (one full signature, one source) as one row: the newest, with `repeats` = how many.

    `runs` are in creation order (as `load_snapshot` reads them)."""
    key = runs["signature_hash"].astype(str) + "|" + runs["source"].astype(str)
    counts = key.map(key.value_counts())
    keep = ~key.duplicated(keep="last")
    return runs[keep].assign(repeats=counts[keep].astype(int))


def headline_order(metrics: Sequence[MetricInfo], primary: str | None) -> list[MetricInfo]:
    """The primary metric first, then quality metrics (exact match and NLL beside a speedup), then the rest
    (speed, counts, costs), each part in stored order."""
    return sorted(metrics, key=lambda m: (m.name != primary, not is_quality(m)))


@dataclass(frozen=True)
class FilterOptions:
    """What the filters of a board offer, from its finished runs."""

    families: list[str]
    sources: list[str]
    hardware: list[str]  # empty where the hardware filter is not offered
    params_millions: tuple[float, float] | None  # None where fewer than two parameter counts differ

    @classmethod
    def of(cls, snapshot: StoreSnapshot, task: str) -> FilterOptions:
        runs = task_runs(snapshot, task)
        present_sources = set(runs["source"])
        hardware = sorted(h for h in set(runs["hardware"]) if h)
        metrics = snapshot.metrics[snapshot.metrics["run_id"].isin(runs["run_id"])]
        if not (has_speed(metric_infos(metrics)) or len(hardware) > 1):
            hardware = []  # one machine on a board without speed metrics: nothing to choose
        params = runs["params"].dropna()
        return cls(
            families=sorted(set(runs["family"])),
            sources=[s for s in SOURCE_NAMES if s in present_sources],
            hardware=hardware,
            params_millions=(float(params.min()) / 1e6, float(params.max()) / 1e6) if params.nunique() > 1 else None,
        )


@dataclass
class Board:
    """A task's board before the visitor's filters: the snapshot it comes from, its groups, primary metric
    and filter choices.

    The app caches one per task, so a first visit and every unfiltered rerun reuse the ranked tables.
    """

    snapshot: StoreSnapshot
    groups: list[Group]
    primary: str | None
    options: FilterOptions

    @classmethod
    def build(cls, snapshot: StoreSnapshot, task: str) -> Board:
        groups, primary = build_groups(snapshot, task)
        return cls(snapshot, groups, primary, FilterOptions.of(snapshot, task))

    def filtered(self, task: str, filters: Filters) -> tuple[list[Group], str | None]:
        """The groups and primary metric under `filters` (the cached ones when nothing is filtered)."""
        if filters == Filters():
            return self.groups, self.primary
        return build_groups(self.snapshot, task, filters)


def _group_table(runs: pd.DataFrame, values: pd.DataFrame, lows: pd.DataFrame, highs: pd.DataFrame,
                 metrics: list[MetricInfo], primary: str | None,
                 papers: dict[str, float]) -> tuple[pd.DataFrame, MetricInfo | None]:
    """One group's table, in reading order: rank, name, details link, the settings that tell rows apart, the
    headline metrics (primary with its interval, then quality), source, then the other metrics and facts."""
    table = pd.DataFrame({
        "rank": np.nan,
        "label": runs["label"].where(runs["label"] != "", runs["method"]),
        "run": run_links(runs["run_id"]),
        "settings": runs["settings"],
        "runs": runs["repeats"] if "repeats" in runs else 1,
    }, index=runs.index)
    by_name = {m.name: m for m in metrics}
    ranked = by_name.get(primary) or (metrics[0] if metrics else None)  # a group may lack the task's primary
    if ranked is not None:
        table["rank"] = rank_with_ties(values[ranked.name], lows[ranked.name], highs[ranked.name],
                                       ranked.higher_is_better)
    headline = [m for m in metrics if m is ranked or is_quality(m)]
    for m in headline:
        table[m.header] = values[m.name]
    if ranked is not None and lows[ranked.name].notna().any():  # after the headline: exact match beside speedup
        table[ranked.ci_header] = _ci_texts(lows[ranked.name].to_numpy(), highs[ranked.name].to_numpy())
    table["source"] = _display(runs["source"], SOURCE_NAMES)
    table["verification"] = runs["verification"]
    if "reproducible" in runs:  # reported rows: the command that reruns it, or why none can (shown when any says)
        table["reproducible here"] = runs["reproducible"].fillna("")
    for m in metrics:
        if m not in headline:
            table[m.header] = values[m.name]
    table["method"] = runs["method"]
    table["family"] = _display(runs["family"], FAMILY_NAMES).replace("", "—")
    table["params"] = runs["params"]
    licences = runs["weights_license"].fillna("") if "weights_license" in runs else pd.Series("", index=runs.index)
    if licences.astype(bool).any():  # a method declared its weights' licence (e.g. non-commercial): said in the row
        table["weights licence"] = licences
    table["hardware"] = runs["hardware"]
    table["date"] = run_dates(runs)
    for m in metrics:
        if m is not ranked and lows[m.name].notna().any():
            table[m.ci_header] = _ci_texts(lows[m.name].to_numpy(), highs[m.name].to_numpy())
    if primary in by_name and papers:
        reproduced = runs["source"] != "reported"
        paper = runs["method"].map(papers).where(reproduced)
        table[f"paper {primary}"] = paper
        table[f"Δ vs paper ({primary})"] = values[primary] - paper
    table["signature"] = runs["signature_hash"]
    table["generate_seconds"] = runs["generate_seconds"]
    table["run_id"] = runs["run_id"]
    table["eval_signature_hash"] = runs["eval_signature_hash"]
    sort_cols = ["rank"] + ([ranked.header] if ranked else [])
    ascending = [True] + ([not ranked.higher_is_better] if ranked else [])
    table = table.sort_values(sort_cols, ascending=ascending, na_position="last", kind="stable")
    return table.reset_index(drop=True), ranked


def run_dates(runs: pd.DataFrame) -> pd.Series:
    """A paper row's publication year (from its paper reference); the day any other run was stored."""
    stored = pd.to_datetime(runs["created_at"], errors="coerce").dt.strftime("%Y-%m-%d").fillna("")
    published = runs["published"] if "published" in runs else pd.Series("", index=runs.index)
    return stored.where(runs["source"] != "reported", published)  # a paper row without a year stays blank


def _ci_texts(lows: np.ndarray, highs: np.ndarray) -> list[str]:
    return [f"[{lo:.4g}, {hi:.4g}]" if lo == lo and hi == hi else "" for lo, hi in zip(lows.tolist(), highs.tolist())]


def has_speed(metrics: Sequence[MetricInfo]) -> bool:
    """A speed board (decoding, NAT latency, RTF): hardware matters, so the hardware filter is shown."""
    return any(is_speed(m) for m in metrics)


COST_UNITS = ("x", "s", "ms", "tokens/s", "img/s", "passes", "tokens", "MB", "files", "samples")


def is_speed(m: MetricInfo) -> bool:
    """A speed metric (plotted on the x axis against quality; its board gets the hardware filter)."""
    name = m.name.lower()
    return (any(k in name for k in ("speedup", "latency", "rtf", "throughput", "seconds", "time"))
            or m.unit in ("x", "s", "ms", "tokens/s", "img/s"))


def is_quality(m: MetricInfo) -> bool:
    """A quality metric: neither a speed nor a count or cost (passes, tokens, memory, files)."""
    return not is_speed(m) and m.unit not in COST_UNITS


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(table: pd.DataFrame, columns: Sequence[str] | None = None) -> bytes:
    """The shown table (or its `columns`) as CSV; text cells that a spreadsheet would run as a formula are
    prefixed with '."""
    safe = table[list(columns)] if columns is not None else table.copy()
    for col in safe.columns:
        if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    buf = io.StringIO()
    safe.to_csv(buf, index=False)
    return buf.getvalue().encode("utf-8")


@dataclass(frozen=True)
class TaskSummary:
    """One card of the overview: a task, its row counts by source, its main protocol group and last change."""

    task: str
    modality: str
    description: str
    counts: dict[str, int]  # display name of the source -> finished rows
    main_group: Group | None
    protocol: str
    last_change: str


def summarize(snapshot: StoreSnapshot, task: str) -> TaskSummary:
    """The overview card of `task`. Only its main protocol group is built (the group the board shows as
    P1: with reproduced or submitted rows, lossless before lossy, the most rows), so the landing page costs
    a fraction of building every board."""
    row = snapshot.tasks[snapshot.tasks["task"] == task]
    runs = task_runs(snapshot, task)
    counts = {name: int((runs["source"] == code).sum()) for code, name in SOURCE_NAMES.items()}
    every = snapshot.runs[snapshot.runs["task"] == task]
    stamps = pd.concat([pd.to_datetime(every[c], errors="coerce") for c in ("created_at", "finished_at")
                        if c in every])
    last = stamps.max() if len(stamps) else pd.NaT
    group, protocol = _main_group(snapshot, runs, task), ""
    if group is not None:
        member = runs[runs["eval_signature_hash"] == group.eval_signature_hash]
        entries = Signature.parse(member["signature"].iloc[0] if len(member) else "").entries
        paper = entries.get("reported_protocol")
        version = entries.get("task_version") or (row["version"].iloc[0] if len(row) else "")
        protocol = f"paper protocol {paper}" if paper else f"ARBench protocol, task v{version}"
    return TaskSummary(
        task=task, modality=str(row["modality"].iloc[0]) if len(row) else "",
        description=str(row["description"].iloc[0] or "") if len(row) else "", counts=counts, main_group=group,
        protocol=protocol, last_change="" if pd.isna(last) else last.strftime("%Y-%m-%d %H:%M UTC"),
    )


def _main_group(snapshot: StoreSnapshot, runs: pd.DataFrame, task: str) -> Group | None:
    """The first group of the task's board, chosen by the order `build_groups` sorts by, built alone."""
    if runs.empty:
        return None
    keyed = runs.assign(track=decoding_tracks(runs, snapshot.metrics), own=runs["source"] != "reported",
                        row=runs["signature_hash"].astype(str) + "|" + runs["source"].astype(str))
    stats = (keyed.groupby(["eval_signature_hash", "track"], sort=False)
             .agg(own=("own", "any"), rows=("row", "nunique")).reset_index())
    stats["lossy"] = stats["track"] == "lossy"
    best = stats.sort_values(["own", "lossy", "rows"], ascending=[False, True, False], kind="stable").iloc[0]
    members = snapshot.runs["eval_signature_hash"] == best["eval_signature_hash"]
    alone = StoreSnapshot(snapshot.tasks, snapshot.runs[members],
                          snapshot.metrics[snapshot.metrics["run_id"].isin(snapshot.runs.loc[members, "run_id"])])
    groups, _ = build_groups(alone, task)
    return next((g for g in groups if g.track == best["track"]), groups[0] if groups else None)
