"""`moai usage report`: what the mixes cost, how fast they were and how well they answered.

Reads the usage database (see `moai.usage.store`) and sums it up per model, per mix and, when runs were
split into A/B arms, per arm of each mix, side by side. `format_text` gives the terminal tables;
`render_html` gives one self-contained page: inline CSS and inline SVG charts drawn with matplotlib
(imported only there, with the Agg backend), so the file opens anywhere without a network.

Definitions used by every table:

- a model's *runs* are the runs it answered in (an ok reply: the run's `models_used`);
- *calls* are the calls made (a call the gate or the breaker refused, status `skipped`, is not one);
  *fallback* is the share of calls made as a fallback for another model, *errors* the share that failed;
- *latency* is per successful call for a model, per run (start to answer) for a mix or an arm;
- *feedback* is the mean user score in [0, 1] over the runs that got any (a run's scores are averaged
  first, so a run scored five times counts once);
- *saved* compares what the finished runs cost with what one call to the mix's dearest model would have
  cost for each of them (`baseline_cost_usd`).
"""

from __future__ import annotations

import argparse
import html
import io
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from inspect import signature
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moai.usage.store import UsageStore

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHARTS",
    "LEGEND",
    "NO_ARM",
    "Report",
    "Stats",
    "Usage",
    "build_report",
    "empty_message",
    "format_text",
    "parse_since",
    "percentile",
    "read_usage",
    "render_charts",
    "render_html",
    "since_arg",
    "write_html",
]

Row = dict[str, Any]

CHARTS = ("cost", "latency", "traffic", "savings")
"""The page's charts, in order; each is a `<figure class="chart" id="chart-NAME">` holding an inline SVG."""

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE_HELP = "an ISO date or date-time (2025-06-01, 2025-06-01T09:30, ...Z or +02:00) or an age (30m, 24h, 7d, 2w)"


def parse_since(text: str, now: float | None = None) -> float:
    """Return the Unix time `text` names: an ISO date/time (local time when it has no offset) or an age.

    Args:
        text: `2025-06-01`, `2025-06-01T09:30`, `2025-06-01T09:30Z`, ... or `30m`, `24h`, `7d`, `2w`, `45s`.
        now: The time an age counts back from (default: now).

    Raises:
        ValueError: `text` is neither; the message lists the accepted forms.
    """
    age = _AGE.match(text)
    if age:
        return (time.time() if now is None else now) - float(age.group(1)) * _AGE_SECONDS[age.group(2).lower()]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since: expected {_SINCE_HELP}; got {text!r}") from None


def since_arg(text: str) -> float:
    """Parse `--since` for argparse (a bad value exits 2 with the accepted forms)."""
    try:
        return parse_since(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--since: ")) from None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Return the `q` quantile (0 to 1) of `values`, interpolating linearly between ranks; None when empty.

    The same definition as numpy's default: rank `q * (n - 1)` in the sorted values.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Usage:
    """The rows of a usage database from one time on: runs, model calls, and the feedback on those runs.

    Attributes:
        db: Where they were read from.
        runs: Rows of the `runs` table, oldest first.
        calls: Rows of the `calls` table, oldest first.
        feedback: Rows of the `feedback` table about `runs`.
        since: The Unix time they start at (None: everything).
    """

    db: str
    runs: list[Row]
    calls: list[Row]
    feedback: list[Row]
    since: float | None = None

    @property
    def empty(self) -> bool:
        """Whether nothing was recorded in the period."""
        return not self.runs and not self.calls

    def run_scores(self) -> dict[str, float]:
        """Return each run's mean feedback score, for the runs that got feedback."""
        scores: dict[str, list[float]] = defaultdict(list)
        for row in self.feedback:
            if row["score"] is not None:
                scores[row["run_id"]].append(float(row["score"]))
        return {run_id: sum(s) / len(s) for run_id, s in scores.items()}

    def answered(self) -> dict[str, list[str]]:
        """Return the models that answered each run: its `models_used`, else those with an ok call."""
        ok: dict[str, list[str]] = defaultdict(list)
        for call in self.calls:
            if call["status"] == "ok" and call["model"] not in ok[call["run_id"]]:
                ok[call["run_id"]].append(call["model"])
        return {run["run_id"]: list(run["models_used"] or ok.get(run["run_id"], [])) for run in self.runs}


def read_usage(db: str, since: float | None = None) -> Usage:
    """Read the runs and calls from `since` on, and the feedback on those runs, from a usage database.

    Args:
        db: A SQLite file or a `postgresql://` URL.
        since: A Unix time (None: everything).
    """
    store = UsageStore(db)
    try:
        runs, calls, feedback = store.runs(since), store.calls(since), store.feedback()
    finally:
        store.close()
    ids = {run["run_id"] for run in runs}
    return Usage(db, runs, calls, [row for row in feedback if row["run_id"] in ids], since)


@dataclass(frozen=True, kw_only=True)
class Stats:
    """The figures of one model, mix or arm.

    Attributes:
        name: The model, mix or arm.
        runs: Runs (for a model: the runs it answered in).
        calls: Model calls made (refused ones not counted).
        tokens_in: Prompt tokens of those calls.
        tokens_out: Output tokens of those calls.
        cost_usd: US dollars spent.
        latency_p50_s: Median latency (per ok call for a model, per finished run otherwise).
        latency_p95_s: 95th percentile of the same.
        co2e_g: Grams of CO2e emitted.
        feedback_mean: Mean feedback score over the runs that got any.
        feedback_runs: How many runs got feedback.
        fallback_rate: Share of calls made as a fallback for another model.
        error_rate: Share of calls that failed.
        cache_hit_rate: Share of runs whose routing decision came from the cache (mixes and arms).
        compared_cost_usd: What the runs with a baseline cost (mixes and arms).
        baseline_cost_usd: What one call per run to the mix's dearest model would have cost instead.
        baseline_models: The dearest models of the mixes compared.
        mixes: The mixes the runs went through (mixes and arms).
    """

    name: str
    runs: int
    calls: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    co2e_g: float
    feedback_mean: float | None
    feedback_runs: int
    fallback_rate: float | None
    error_rate: float | None
    cache_hit_rate: float | None = None
    compared_cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    baseline_models: tuple[str, ...] = ()
    mixes: tuple[str, ...] = ()

    @property
    def saved_usd(self) -> float | None:
        """Dollars saved against the baseline (negative: the mix cost more)."""
        if self.baseline_cost_usd is None or self.compared_cost_usd is None:
            return None
        return self.baseline_cost_usd - self.compared_cost_usd

    @property
    def saved_share(self) -> float | None:
        """Share of the baseline saved; None when there is no baseline or it cost nothing."""
        saved = self.saved_usd
        if saved is None or not self.baseline_cost_usd:
            return None
        return saved / self.baseline_cost_usd


def _stats(
    name: str,
    runs: Sequence[Row],
    calls: Sequence[Row],
    scores: Mapping[str, float],
    *,
    per_run: bool,
) -> Stats:
    """Sum up a group; `per_run` marks a mix or an arm (run latency, cache hits and savings)."""
    made = [c for c in calls if c["status"] != "skipped"]
    if per_run:
        latencies = [r["finished_ts"] - r["ts"] for r in runs if r["status"] == "ok" and r["finished_ts"] is not None]
    else:
        latencies = [c["latency_s"] for c in made if c["status"] == "ok"]
    rated = [scores[r["run_id"]] for r in runs if r["run_id"] in scores]
    extra: dict[str, Any] = {}
    if per_run:
        hits = [r["cache_hit"] for r in runs if r["cache_hit"] is not None]
        compared = [r for r in runs if r["baseline_cost_usd"] is not None and r["cost_usd"] is not None]
        extra = {
            "cache_hit_rate": _mean([float(h) for h in hits]),
            "compared_cost_usd": sum(r["cost_usd"] for r in compared) if compared else None,
            "baseline_cost_usd": sum(r["baseline_cost_usd"] for r in compared) if compared else None,
            "baseline_models": tuple(dict.fromkeys(r["baseline_model"] for r in compared if r["baseline_model"])),
            "mixes": tuple(sorted({r["mix"] for r in runs})),
        }
    return Stats(
        name=name,
        runs=len(runs),
        calls=len(made),
        tokens_in=sum(c["tokens_in"] or 0 for c in made),
        tokens_out=sum(c["tokens_out"] or 0 for c in made),
        cost_usd=sum(c["cost_usd"] or 0.0 for c in calls),
        latency_p50_s=percentile(latencies, 0.5),
        latency_p95_s=percentile(latencies, 0.95),
        co2e_g=sum(c["co2e_g"] or 0.0 for c in calls),
        feedback_mean=_mean(rated),
        feedback_runs=len(rated),
        fallback_rate=_share(sum(1 for c in made if c["fallback_for"]), len(made)),
        error_rate=_share(sum(1 for c in made if c["status"] == "error"), len(made)),
        **extra,
    )


NO_ARM = "(no arm)"
"""The column of a mix's runs that had no arm, beside its arms (for arms that name no split)."""


def _arm_of(row: Row) -> tuple[str, str] | None:
    """Return the (experiment, arm) a row belongs to, or None when it has no arm.

    An A/B split records `<split>/<arm>` (its arms may be different mixes): the experiment is the split.
    A bare arm name (set by the caller in the mix's input) is an arm of the row's own mix.
    """
    if not row["arm"]:
        return None
    split, slash, arm = str(row["arm"]).partition("/")
    return (split, arm) if slash else (row["mix"], split)


@dataclass(frozen=True)
class Report:
    """A usage report: the rows it was made from and their figures.

    Attributes:
        usage: The rows.
        total: Every run and call.
        models: One entry per model, most calls first.
        mixes: One entry per mix, most runs first.
        arms: For each A/B experiment (a split, or a mix whose runs carry bare arm names), one entry per
            arm, by name; a mix's runs without an arm are the column `NO_ARM`.
    """

    usage: Usage
    total: Stats
    models: list[Stats]
    mixes: list[Stats]
    arms: dict[str, list[Stats]]


def _group(rows: Iterable[Row], key: Callable[[Row], Any]) -> dict[Any, list[Row]]:
    groups: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _experiments(usage: Usage, scores: Mapping[str, float]) -> dict[str, list[Stats]]:
    """Return the figures of each A/B experiment's arms, side by side."""
    mix_arms = {exp for row in [*usage.runs, *usage.calls] if (exp := _arm_of(row)) and "/" not in row["arm"]}
    bare = {mix for mix, _ in mix_arms}

    def key(row: Row) -> tuple[str, str] | None:
        arm = _arm_of(row)
        return arm if arm is not None else ((row["mix"], NO_ARM) if row["mix"] in bare else None)

    runs, calls = _group(usage.runs, key), _group(usage.calls, key)
    cells = sorted({k for k in [*runs, *calls] if k is not None}, key=lambda k: (k[0], k[1] == NO_ARM, k[1]))
    experiments: dict[str, list[Stats]] = defaultdict(list)
    for name, arm in cells:
        experiments[name].append(
            _stats(arm, runs.get((name, arm), []), calls.get((name, arm), []), scores, per_run=True)
        )
    return dict(experiments)


def build_report(usage: Usage) -> Report:
    """Compute the figures of a report from the rows of a usage database."""
    scores = usage.run_scores()
    runs_by_id = {r["run_id"]: r for r in usage.runs}
    model_runs: dict[str, list[Row]] = defaultdict(list)
    for run_id, names in usage.answered().items():
        for model in names:
            model_runs[model].append(runs_by_id[run_id])
    model_calls = _group(usage.calls, lambda c: c["model"])
    mix_runs, mix_calls = _group(usage.runs, lambda r: r["mix"]), _group(usage.calls, lambda c: c["mix"])

    models = [
        _stats(name, model_runs.get(name, []), model_calls.get(name, []), scores, per_run=False)
        for name in {*model_calls, *model_runs}
    ]
    models.sort(key=lambda s: (-s.calls, -s.runs, s.name))
    mixes = [
        _stats(name, mix_runs.get(name, []), mix_calls.get(name, []), scores, per_run=True)
        for name in {*mix_runs, *mix_calls}
    ]
    mixes.sort(key=lambda s: (-s.runs, -s.calls, s.name))
    total = _stats("total", usage.runs, usage.calls, scores, per_run=True)
    return Report(usage=usage, total=total, models=models, mixes=mixes, arms=_experiments(usage, scores))


# ---- formatting -------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    """Format with `digits` significant digits (no exponent); thousands separated; '-' for None."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def _int(value: int) -> str:
    return f"{value:,}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _feedback(stats: Stats) -> str:
    return "-" if stats.feedback_mean is None else f"{stats.feedback_mean:.2f} ({stats.feedback_runs})"


def _saved(stats: Stats) -> str:
    return "-" if stats.saved_share is None else f"{stats.saved_share:.1%}"


Column = tuple[str, Callable[[Stats], str]]

_USAGE_COLUMNS: tuple[Column, ...] = (
    ("runs", lambda s: _int(s.runs)),
    ("calls", lambda s: _int(s.calls)),
    ("tokens in", lambda s: _int(s.tokens_in)),
    ("tokens out", lambda s: _int(s.tokens_out)),
    ("cost $", lambda s: _num(s.cost_usd)),
    ("p50 s", lambda s: _num(s.latency_p50_s)),
    ("p95 s", lambda s: _num(s.latency_p95_s)),
    ("CO2e g", lambda s: _num(s.co2e_g)),
    ("feedback (n)", _feedback),
    ("fallback", lambda s: _pct(s.fallback_rate)),
    ("errors", lambda s: _pct(s.error_rate)),
)
_SAVINGS_COLUMNS: tuple[Column, ...] = (
    ("runs", lambda s: _int(s.runs)),
    ("cost $", lambda s: _num(s.compared_cost_usd)),
    ("baseline model", lambda s: ", ".join(s.baseline_models) or "-"),
    ("baseline $", lambda s: _num(s.baseline_cost_usd)),
    ("saved $", lambda s: _num(s.saved_usd)),
    ("saved", _saved),
    ("cache hits", lambda s: _pct(s.cache_hit_rate)),
)
_ARM_ROWS: tuple[Column, ...] = (
    ("mix", lambda s: ", ".join(s.mixes) or "-"),
    *_USAGE_COLUMNS,
    ("baseline $", lambda s: _num(s.baseline_cost_usd)),
    ("saved", _saved),
    ("cache hits", lambda s: _pct(s.cache_hit_rate)),
)

LEGEND = (
    ("runs", "queries through the mix; for a model, the runs it answered in (an ok reply)"),
    ("calls", "model calls made; calls the gate or the circuit breaker refused are not counted"),
    ("p50 s / p95 s", "latency: per successful call for a model, per run (start to answer) for a mix or arm"),
    ("feedback (n)", "mean user score, 0 to 1, over the n runs that got feedback (moai feedback RUN_ID SCORE)"),
    ("fallback", "share of calls made as a fallback for another model"),
    ("errors", "share of calls that failed"),
    ("baseline $", "what one call per finished run to the mix's dearest model would have cost"),
    ("saved", "baseline minus what those runs cost, as a share of the baseline"),
    ("cache hits", "share of runs whose routing decision came from the routing cache"),
)


def _rows(stats: Sequence[Stats], columns: Sequence[Column]) -> list[list[str]]:
    return [[s.name, *(get(s) for _, get in columns)] for s in stats]


def _arm_rows(arms: Sequence[Stats]) -> list[list[str]]:
    return [[label, *(get(s) for s in arms)] for label, get in _ARM_ROWS]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def _period(usage: Usage) -> str:
    stamps = [r["ts"] for r in usage.runs] or [c["ts"] for c in usage.calls]
    if not stamps:
        return "" if usage.since is None else f"since {_when(usage.since)}"
    return f"{_when(min(stamps))} to {_when(max(stamps))}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def empty_message(usage: Usage) -> str:
    """Say that a database holds nothing for the period, and how to fill it."""
    since = f" since {_when(usage.since)}" if usage.since is not None else ""
    return f"No usage recorded in {usage.db}{since}: run a mix (moai run MIX QUERY) and report again."


def _summary(report: Report) -> str:
    total = report.total
    parts = [
        f"{_int(total.runs)} runs",
        f"{_int(total.calls)} calls",
        f"${_num(total.cost_usd)}",
        f"{_num(total.co2e_g)} g CO2e",
    ]
    if total.saved_share is not None:
        parts.append(f"saved {_saved(total)} (${_num(total.saved_usd)}) against each mix's dearest model")
    return ", ".join(parts)


def format_text(report: Report) -> str:
    """Return the report as plain-text tables (per model, per mix, savings, and A/B arms if any)."""
    usage = report.usage
    if usage.empty:
        return empty_message(usage)
    out = [f"moai usage: {usage.db}, {_period(usage)}", _summary(report), ""]
    out += ["Per model", _text_table(["model", *(h for h, _ in _USAGE_COLUMNS)], _rows(report.models, _USAGE_COLUMNS))]
    out += ["", "Per mix", _text_table(["mix", *(h for h, _ in _USAGE_COLUMNS)], _rows(report.mixes, _USAGE_COLUMNS))]
    out += [
        "",
        "Savings against each mix's dearest model, and routing cache",
        _text_table(["mix", *(h for h, _ in _SAVINGS_COLUMNS)], _rows(report.mixes, _SAVINGS_COLUMNS)),
    ]
    for name, arms in report.arms.items():
        out += ["", f"A/B arms of {name}", _text_table(["", *(a.name for a in arms)], _arm_rows(arms))]
    out += ["", *(f"{name}: {meaning}" for name, meaning in LEGEND)]
    return "\n".join(out)


# ---- charts -------------------------------------------------------------------------------------------

_BUCKETS = ((3 * 3600, 300, "5 minutes"), (3 * 86400, 3600, "hour"), (120 * 86400, 86400, "day"))


def _bucket_unit(span_s: float) -> tuple[int, str]:
    """Return the bucket width (seconds) and its name for a period of `span_s` seconds."""
    for longest, width, name in _BUCKETS:
        if span_s <= longest:
            return width, name
    return 7 * 86400, "week"


def _bucket(ts: float, width: int) -> datetime:
    """Return the start, in local time, of the bucket of width `width` that holds `ts`."""
    moment = datetime.fromtimestamp(ts)
    if width == 300:
        return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
    if width == 3600:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if width == 86400 else day - timedelta(days=day.weekday())


def _colours(names: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


_WIDE = {"cost", "savings"}
"""Charts that span the page; the others sit two to a row."""


def _half_height(rows: int) -> float:
    """Return the height (inches) of a half-width chart with a row per model: the pair lines up."""
    return max(2.8, 0.55 * rows + 1.4)


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _time_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _cost_chart(report: Report, colours: Mapping[str, Any]) -> Figure:
    """Stacked bars of cost per time bucket, one colour per model (calls when no model has a price)."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    calls = [c for c in report.usage.calls if c["status"] != "skipped"]
    fig, ax = plt.subplots(figsize=(10.5, 3.4))
    if not calls:
        _note(ax, "no model calls in this period")
        return fig
    width, unit = _bucket_unit(max(c["ts"] for c in calls) - min(c["ts"] for c in calls))
    priced = any(c["cost_usd"] for c in calls)
    per: dict[str, dict[datetime, float]] = defaultdict(lambda: defaultdict(float))
    for c in calls:
        per[c["model"]][_bucket(c["ts"], width)] += c["cost_usd"] if priced else 1.0
    buckets = sorted({b for by in per.values() for b in by})
    x = mdates.date2num(buckets)  # type: ignore[no-untyped-call]
    bottom = [0.0] * len(buckets)
    for model in colours:
        if model not in per:
            continue
        heights = [per[model].get(b, 0.0) for b in buckets]
        ax.bar(x, heights, width=width / 86400 * 0.85, bottom=bottom, color=colours[model], label=model, align="edge")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    # A short period is a bar or two: keep them bar-wide, with room for a few buckets around.
    step = width / 86400
    ax.set_xlim(x[0] - step, max(x[-1] + 2 * step, x[0] + 8 * step))
    _time_axis(ax)
    if not priced:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("US$" if priced else "calls")
    ax.set_title(
        f"Cost per {unit}, by model" if priced else f"Calls per {unit}, by model (no model in this period has a price)"
    )
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _latency_chart(report: Report, colours: Mapping[str, Any]) -> Figure:
    """A box per model of its successful calls' latencies, with the calls as dots."""
    import random

    import matplotlib.pyplot as plt

    per: dict[str, list[float]] = defaultdict(list)
    for c in report.usage.calls:
        if c["status"] == "ok" and c["latency_s"] is not None:
            per[c["model"]].append(float(c["latency_s"]))
    models = [m for m in colours if per.get(m)]
    fig, ax = plt.subplots(figsize=(5.2, _half_height(len(models))))
    if not models:
        _note(ax, "no successful model call in this period")
        return fig
    data = [per[m] for m in reversed(models)]
    # matplotlib 3.10 replaced `vert` with `orientation` (and deprecated `vert` in 3.11).
    sideways = {"orientation": "horizontal"} if "orientation" in signature(ax.boxplot).parameters else {"vert": False}
    boxes = ax.boxplot(
        data,
        **sideways,
        widths=0.55,
        showfliers=False,
        patch_artist=True,
        medianprops={"color": "black", "linewidth": 1.4},
    )
    rng = random.Random(0)
    for i, (model, values) in enumerate(zip(reversed(models), data, strict=True), start=1):
        boxes["boxes"][i - 1].set(facecolor=colours[model], alpha=0.35, edgecolor=colours[model])
        sample = values if len(values) <= 1500 else rng.sample(values, 1500)
        ys = [i + rng.uniform(-0.18, 0.18) for _ in sample]
        ax.scatter(sample, ys, s=7, color=colours[model], alpha=0.55, linewidths=0, zorder=3)
    ax.set_yticks(range(1, len(models) + 1), [f"{m} (n={len(per[m]):,})" for m in reversed(models)])
    everything = [v for values in data for v in values]
    low, high = min(everything), max(everything)
    if low > 0 and high / low > 50:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.set_xlabel("seconds per successful call (box: middle half, line: median)")
    ax.set_title("Latency per call, by model")
    return fig


def _traffic_chart(report: Report, colours: Mapping[str, Any]) -> Figure:
    """Horizontal bars: each model's share of the calls made."""
    import matplotlib.pyplot as plt

    models = [s for s in report.models if s.calls]
    fig, ax = plt.subplots(figsize=(5.2, _half_height(len(models))))
    total = sum(s.calls for s in models)
    if not total:
        _note(ax, "no model calls in this period")
        return fig
    names = [s.name for s in reversed(models)]
    shares = [s.calls / total for s in reversed(models)]
    bars = ax.barh(names, shares, color=[colours[n] for n in names], height=0.6)
    right = min(1.0, max(shares) * 1.5)
    for bar, stats in zip(bars, reversed(models), strict=True):
        share = stats.calls / total
        label = f"{share:.1%}  ({stats.calls:,} call{'' if stats.calls == 1 else 's'})"
        inside = share > 0.7 * right  # no room for the label after the bar: write it on the bar
        ax.annotate(
            f"{label} " if inside else f" {label}",
            (share, bar.get_y() + bar.get_height() / 2),
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontsize=8,
        )
    ax.set_xlim(0, right)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_title("Share of traffic (calls made), by model")
    return fig


def _savings_chart(report: Report) -> Figure:
    """Per mix: cost against the dearest-model baseline; over time: both, summed from the first run."""
    import matplotlib.pyplot as plt

    title = "Savings against sending every query to the mix's most expensive model"
    mixes = [s for s in report.mixes if s.baseline_cost_usd is not None]
    if not mixes or not any(s.baseline_cost_usd for s in mixes):
        fig, ax = plt.subplots(figsize=(10.5, 1.4), layout="constrained")
        why = "no finished run in this period" if not mixes else "every mix's dearest model is free (no price)"
        _note(ax, f"nothing to compare: {why}")
        ax.set_title(title)
        return fig
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10.5, 3.4), gridspec_kw={"width_ratios": [1, 1.5]}, layout="constrained"
    )
    names = [s.name for s in mixes]
    xs = range(len(mixes))
    left.bar([x - 0.2 for x in xs], [s.baseline_cost_usd or 0.0 for s in mixes], 0.4, color="#bbb", label="baseline")
    left.bar([x + 0.2 for x in xs], [s.compared_cost_usd or 0.0 for s in mixes], 0.4, color="#2a9d5c", label="actual")
    for x, s in zip(xs, mixes, strict=True):
        top = max(s.baseline_cost_usd or 0.0, s.compared_cost_usd or 0.0)
        if s.saved_share is None:
            label = "free pool"  # its dearest model has no price: nothing to save
        elif s.saved_share >= 0:
            label = f"saved {s.saved_share:.0%}"
        else:
            label = f"cost {-s.saved_share:.0%} more"
        left.annotate(label, (x, top), ha="center", va="bottom", fontsize=8, color="#555" if top == 0 else "black")
    left.set_xticks(list(xs), names)
    left.set_ylabel("US$")
    left.margins(y=0.18)
    left.set_title("Per mix", fontsize=10)
    left.legend(fontsize=8, frameon=False)

    finished = sorted(
        (r for r in report.usage.runs if r["baseline_cost_usd"] is not None and r["cost_usd"] is not None),
        key=lambda r: r["ts"],
    )
    when = [datetime.fromtimestamp(r["ts"]) for r in finished]
    base, cost = [], []
    b = c = 0.0
    for r in finished:
        b += r["baseline_cost_usd"]
        c += r["cost_usd"]
        base.append(b)
        cost.append(c)
    right.plot(when, base, color="#888", linestyle="--", label="baseline: dearest model only")
    right.plot(when, cost, color="#2a9d5c", label="actual")
    right.fill_between(
        when,
        cost,
        base,
        where=[x >= y for x, y in zip(base, cost, strict=True)],
        color="#2a9d5c",
        alpha=0.15,
        label="saved",
    )
    _time_axis(right)
    right.set_ylabel("US$, cumulative")
    right.set_title("Over time, all mixes", fontsize=10)
    right.legend(fontsize=8, frameon=False, loc="upper left")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    return fig


def _svg(fig: Figure, prefix: str) -> str:
    """Return the figure as an inline `<svg>` whose ids carry `prefix` (several SVGs share one page)."""
    buffer = io.StringIO()
    # A figure with a layout engine is laid out to its size already; the others are cropped to what they draw.
    tight = None if fig.get_layout_engine() is not None else "tight"
    fig.savefig(buffer, format="svg", bbox_inches=tight, metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\bid="', f'id="{prefix}-', text)
    text = text.replace('href="#', f'href="#{prefix}-').replace("url(#", f"url(#{prefix}-")
    return text


def render_charts(report: Report) -> dict[str, str]:
    """Draw the report's charts; return each as inline SVG, keyed by the names in `CHARTS`."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise ModuleNotFoundError("the HTML report needs matplotlib (pip install matplotlib)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = _colours([s.name for s in report.models])
    charts: dict[str, str] = {}
    with plt.rc_context(
        {
            "svg.hashsalt": "moai-usage",
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
        }
    ):
        draw: dict[str, Callable[[], Figure]] = {
            "cost": lambda: _cost_chart(report, colours),
            "latency": lambda: _latency_chart(report, colours),
            "traffic": lambda: _traffic_chart(report, colours),
            "savings": lambda: _savings_chart(report),
        }
        for name in CHARTS:
            fig = draw[name]()
            try:
                charts[name] = _svg(fig, f"c-{name}")
            finally:
                plt.close(fig)
    return charts


# ---- HTML ---------------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2430; --muted: #5b6472; --line: #e3e6ea; --soft: #f6f7f9; --accent: #2a9d5c; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 18px 0 8px; color: var(--muted); }
.meta { color: var(--muted); margin: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-top: 20px; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; }
.card.good .value { color: var(--accent); }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
figure.chart { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 10px; background: #fff; }
figure.chart.wide { grid-column: 1 / -1; }
figure.chart svg { width: 100%; height: auto; display: block; }
@media (max-width: 900px) { .charts { grid-template-columns: 1fr; } }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.arms { width: auto; min-width: 420px; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--soft); font-weight: 600; font-size: 12px; color: var(--muted); }
th:first-child, td:first-child { text-align: left; }
tbody tr:hover { background: #fafbfc; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; color: var(--muted); }
dt { font-weight: 600; color: var(--ink); }
dd { margin: 0; }
.empty { margin-top: 40px; padding: 24px; background: var(--soft); border-radius: 8px; font-size: 16px; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<h3>{html.escape(caption)}</h3>" if caption else ""
    table = f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'{cap}<div class="scroll">{table}</div>'


def _cards(report: Report) -> str:
    total = report.total
    cards = [
        ("runs", _int(total.runs), ""),
        ("model calls", _int(total.calls), ""),
        ("cost", f"${_num(total.cost_usd)}", ""),
        ("saved", _saved(total), "good" if (total.saved_share or 0) > 0 else ""),
        ("CO2e", f"{_num(total.co2e_g)} g", ""),
        ("feedback", "-" if total.feedback_mean is None else f"{total.feedback_mean:.2f}", ""),
        ("errors", _pct(total.error_rate), ""),
    ]
    return (
        '<section class="cards">'
        + "".join(
            f'<div class="card {cls}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div></div>'
            for label, value, cls in cards
        )
        + "</section>"
    )


def render_html(report: Report) -> str:
    """Return the report as one self-contained HTML page: tables, and the charts as inline SVG."""
    usage = report.usage
    generated = datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = f"{html.escape(usage.db)} &middot; {html.escape(_period(usage))} &middot; generated {generated}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>moai usage report</title><style>{_CSS}</style></head><body><main>",
        f'<header><h1>moai usage report</h1><p class="meta">{meta}</p></header>',
    ]
    if usage.empty:
        parts.append(f'<p class="empty">{html.escape(empty_message(usage))}</p></main></body></html>')
        return "\n".join(parts)
    parts.append(_cards(report))
    charts = render_charts(report)
    figures = "".join(
        f'<figure class="chart{" wide" if name in _WIDE else ""}" id="chart-{name}">{svg}</figure>'
        for name, svg in charts.items()
    )
    parts.append(f'<h2>Charts</h2><section class="charts">{figures}</section>')
    usage_header = [h for h, _ in _USAGE_COLUMNS]
    parts.append("<h2>Per model</h2>" + _html_table(["model", *usage_header], _rows(report.models, _USAGE_COLUMNS)))
    parts.append("<h2>Per mix</h2>" + _html_table(["mix", *usage_header], _rows(report.mixes, _USAGE_COLUMNS)))
    parts.append(
        _html_table(
            ["mix", *(h for h, _ in _SAVINGS_COLUMNS)],
            _rows(report.mixes, _SAVINGS_COLUMNS),
            caption="Savings against each mix's dearest model, and routing cache",
        )
    )
    if report.arms:
        parts.append("<h2>A/B arms</h2>")
        for name, arms in report.arms.items():
            parts.append(_html_table(["", *(a.name for a in arms)], _arm_rows(arms), caption=name, css="arms"))
    legend = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in LEGEND)
    parts.append(f"<h2>How to read the tables</h2><dl>{legend}</dl>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path) -> Path:
    """Write the report's page to `path` (its folder is created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return out
