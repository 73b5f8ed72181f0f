"""The report as terminal tables."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

from moai.usage.report.stats import Report, Stats, Usage

__all__ = [
    "ARM_ROWS",
    "LEGEND",
    "SAVINGS_COLUMNS",
    "USAGE_COLUMNS",
    "Column",
    "arm_rows",
    "empty_message",
    "fmt_int",
    "fmt_num",
    "fmt_pct",
    "fmt_saved",
    "format_text",
    "period",
    "table_rows",
]


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Format with `digits` significant digits (no exponent); thousands separated; '-' for None."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def fmt_int(value: int) -> str:
    return f"{value:,}"


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _feedback(stats: Stats) -> str:
    return "-" if stats.feedback_mean is None else f"{stats.feedback_mean:.2f} ({stats.feedback_runs})"


def fmt_saved(stats: Stats) -> str:
    return "-" if stats.saved_share is None else f"{stats.saved_share:.1%}"


Column = tuple[str, Callable[[Stats], str]]

USAGE_COLUMNS: tuple[Column, ...] = (
    ("runs", lambda s: fmt_int(s.runs)),
    ("calls", lambda s: fmt_int(s.calls)),
    ("tokens in", lambda s: fmt_int(s.tokens_in)),
    ("tokens out", lambda s: fmt_int(s.tokens_out)),
    ("cost $", lambda s: fmt_num(s.cost_usd)),
    ("p50 s", lambda s: fmt_num(s.latency_p50_s)),
    ("p95 s", lambda s: fmt_num(s.latency_p95_s)),
    ("CO2e g", lambda s: fmt_num(s.co2e_g)),
    ("feedback (n)", _feedback),
    ("fallback", lambda s: fmt_pct(s.fallback_rate)),
    ("errors", lambda s: fmt_pct(s.error_rate)),
)
SAVINGS_COLUMNS: tuple[Column, ...] = (
    ("runs", lambda s: fmt_int(s.runs)),
    ("cost $", lambda s: fmt_num(s.compared_cost_usd)),
    ("baseline model", lambda s: ", ".join(s.baseline_models) or "-"),
    ("baseline $", lambda s: fmt_num(s.baseline_cost_usd)),
    ("saved $", lambda s: fmt_num(s.saved_usd)),
    ("saved", fmt_saved),
    ("cache hits", lambda s: fmt_pct(s.cache_hit_rate)),
)
ARM_ROWS: tuple[Column, ...] = (
    ("mix", lambda s: ", ".join(s.mixes) or "-"),
    *USAGE_COLUMNS,
    ("baseline $", lambda s: fmt_num(s.baseline_cost_usd)),
    ("saved", fmt_saved),
    ("cache hits", lambda s: fmt_pct(s.cache_hit_rate)),
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


def table_rows(stats: Sequence[Stats], columns: Sequence[Column]) -> list[list[str]]:
    return [[s.name, *(get(s) for _, get in columns)] for s in stats]


def arm_rows(arms: Sequence[Stats]) -> list[list[str]]:
    return [[label, *(get(s) for s in arms)] for label, get in ARM_ROWS]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def period(usage: Usage) -> str:
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
        f"{fmt_int(total.runs)} runs",
        f"{fmt_int(total.calls)} calls",
        f"${fmt_num(total.cost_usd)}",
        f"{fmt_num(total.co2e_g)} g CO2e",
    ]
    if total.saved_share is not None:
        parts.append(f"saved {fmt_saved(total)} (${fmt_num(total.saved_usd)}) against each mix's dearest model")
    return ", ".join(parts)


def format_text(report: Report) -> str:
    """Return the report as plain-text tables (per model, per mix, savings, and A/B arms if any)."""
    usage = report.usage
    if usage.empty:
        return empty_message(usage)
    out = [f"moai usage: {usage.db}, {period(usage)}", _summary(report), ""]
    out += [
        "Per model",
        _text_table(["model", *(h for h, _ in USAGE_COLUMNS)], table_rows(report.models, USAGE_COLUMNS)),
    ]
    out += [
        "",
        "Per mix",
        _text_table(["mix", *(h for h, _ in USAGE_COLUMNS)], table_rows(report.mixes, USAGE_COLUMNS)),
    ]
    out += [
        "",
        "Savings against each mix's dearest model, and routing cache",
        _text_table(["mix", *(h for h, _ in SAVINGS_COLUMNS)], table_rows(report.mixes, SAVINGS_COLUMNS)),
    ]
    for name, arms in report.arms.items():
        out += ["", f"A/B arms of {name}", _text_table(["", *(a.name for a in arms)], arm_rows(arms))]
    out += ["", *(f"{name}: {meaning}" for name, meaning in LEGEND)]
    return "\n".join(out)
