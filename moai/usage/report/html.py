"""The report as one self-contained HTML page: inline CSS and inline SVG charts, no network."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from moai.usage.report.charts import WIDE, render_charts
from moai.usage.report.stats import Report
from moai.usage.report.text import (
    LEGEND,
    SAVINGS_COLUMNS,
    USAGE_COLUMNS,
    arm_rows,
    empty_message,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_saved,
    period,
    table_rows,
)

__all__ = ["render_html", "write_html"]

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
        ("runs", fmt_int(total.runs), ""),
        ("model calls", fmt_int(total.calls), ""),
        ("cost", f"${fmt_num(total.cost_usd)}", ""),
        ("saved", fmt_saved(total), "good" if (total.saved_share or 0) > 0 else ""),
        ("CO2e", f"{fmt_num(total.co2e_g)} g", ""),
        ("feedback", "-" if total.feedback_mean is None else f"{total.feedback_mean:.2f}", ""),
        ("errors", fmt_pct(total.error_rate), ""),
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
    meta = f"{html.escape(usage.db)} &middot; {html.escape(period(usage))} &middot; generated {generated}"
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
        f'<figure class="chart{" wide" if name in WIDE else ""}" id="chart-{name}">{svg}</figure>'
        for name, svg in charts.items()
    )
    parts.append(f'<h2>Charts</h2><section class="charts">{figures}</section>')
    usage_header = [h for h, _ in USAGE_COLUMNS]
    parts.append("<h2>Per model</h2>" + _html_table(["model", *usage_header], table_rows(report.models, USAGE_COLUMNS)))
    parts.append("<h2>Per mix</h2>" + _html_table(["mix", *usage_header], table_rows(report.mixes, USAGE_COLUMNS)))
    parts.append(
        _html_table(
            ["mix", *(h for h, _ in SAVINGS_COLUMNS)],
            table_rows(report.mixes, SAVINGS_COLUMNS),
            caption="Savings against each mix's dearest model, and routing cache",
        )
    )
    if report.arms:
        parts.append("<h2>A/B arms</h2>")
        for name, arms in report.arms.items():
            parts.append(_html_table(["", *(a.name for a in arms)], arm_rows(arms), caption=name, css="arms"))
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
