"""`moai usage report`: what the mixes cost, how fast they were and how well they answered.

Reads the usage database (see `moai.usage.store`) and sums it up per model, per mix and, when runs were
split into A/B arms, per arm of each mix, side by side. `text.format_text` gives the terminal tables;
`html.render_html` gives one self-contained page: inline CSS and inline SVG charts drawn with matplotlib
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

from moai.usage.report.charts import CHARTS, render_charts
from moai.usage.report.html import render_html, write_html
from moai.usage.report.stats import (
    NO_ARM,
    Report,
    Stats,
    Usage,
    build_report,
    parse_since,
    percentile,
    read_usage,
    since_arg,
)
from moai.usage.report.text import LEGEND, empty_message, format_text

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
