"""The report's charts, drawn with matplotlib (imported here only, with the Agg backend) as inline SVG."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from inspect import signature
from typing import TYPE_CHECKING, Any

from moai.usage.report.stats import Report

__all__ = [
    "CHARTS",
    "WIDE",
    "render_charts",
]

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHARTS = ("cost", "latency", "traffic", "savings")
"""The page's charts, in order; each is a `<figure class="chart" id="chart-NAME">` holding an inline SVG."""

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


WIDE = {"cost", "savings"}
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
        per[c["model"]][_bucket(c["ts"], width)] += (c["cost_usd"] or 0.0) if priced else 1.0
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
