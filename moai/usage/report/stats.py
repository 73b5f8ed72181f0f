"""The report's figures: usage read from the store, summed per model, per mix and per A/B arm."""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moai.usage.store import UsageStore

__all__ = [
    "NO_ARM",
    "Report",
    "Row",
    "Stats",
    "Usage",
    "build_report",
    "parse_since",
    "percentile",
    "read_usage",
    "since_arg",
]

Row = dict[str, Any]

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
        latencies = [
            r["finished_ts"] - r["ts"]
            for r in runs
            if r["status"] == "ok" and r["finished_ts"] is not None and r["ts"] is not None
        ]
    else:
        latencies = [c["latency_s"] for c in made if c["status"] == "ok" and c["latency_s"] is not None]
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
