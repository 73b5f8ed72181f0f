"""The pure half of `moai bench cascade`: choosing a cascade's proposers on train, reading curves, the table.

The graph runs themselves belong to the surface (`moai.cascade_bench`); what is here needs no graph:

- `choose_proposers`: which cheap models propose first, chosen on training queries only, by what the
  answer-reading judges (`moai.scorer.answers`) make of their recorded answers;
- `curve_entry`: one method's report entry from its points (each point a graph run over the test queries),
  with the keys of `moai bench routing` (`quality`, `cost`, `curve`, `cost_at_best_single_quality`,
  `quality_at_best_single_cost`, ...);
- `operating_point`: the point chosen on out-of-fold runs over train (never on test);
- `format_table`: the printed table, which says when a method does not beat the best single model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from moai.scorer.answers import agreement, query_form
from moai.scorer.benchmark.evaluate import aligned, fmt_cell
from moai.scorer.data.responses import ResponseIndex
from moai.scorer.data.routing import RoutingData
from moai.scorer.objective import aiq

__all__ = ["CHEAP_SHARE", "choose_proposers", "curve_entry", "format_table", "operating_point", "simulate_agreement"]

CHEAP_SHARE = 0.25
"""A proposer of a cascade costs at most this share of the strong model's mean cost per query (on train)."""
MAX_PROPOSERS = 3
"""Most cheap models that propose together in an agreement cascade."""
_EPS = 1e-12


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits) + 0.0


def simulate_agreement(
    data: RoutingData, index: ResponseIndex, proposers: Sequence[str], strong: str
) -> tuple[float, float]:
    """Return (quality, cost) on `data` of: these models propose; all agree, or the strong model answers.

    An estimate used only to choose proposers on training queries; the benchmark's figures are graph runs.
    """
    cols = {m: data.models.index(m) for m in (*proposers, strong)}
    quality: list[float] = []
    cost: list[float] = []
    for row, (qid, prompt) in enumerate(zip(data.ids, data.prompts, strict=True)):
        found = [index.by_id.get(m, {}).get(qid) for m in proposers]
        base = float(np.nansum([data.costs[row, cols[m]] for m in proposers]))
        if any(f is None for f in found):
            agreed = False
        else:
            scores = agreement([f.response for f in found if f is not None], query_form(prompt) or "text")
            agreed = max(s or 0.0 for s in scores) >= 1.0 - _EPS
        if agreed:
            quality.append(float(np.nan_to_num(data.scores[row, cols[proposers[0]]])))
            cost.append(base)
        else:
            quality.append(float(np.nan_to_num(data.scores[row, cols[strong]])))
            cost.append(base + float(np.nan_to_num(data.costs[row, cols[strong]])))
    return float(np.mean(quality)), float(np.mean(cost))


def choose_proposers(
    data: RoutingData, index: ResponseIndex, strong: str, cheap_share: float = CHEAP_SHARE
) -> tuple[list[str], dict[str, Any]]:
    """Return the cheap models of an agreement cascade, chosen on `data` (training queries), and why.

    Candidates are the models whose mean cost is at most `cheap_share` of the strong model's; every set of
    two or three of them is scored by `simulate_agreement`, and the set of best quality among those whose
    estimated cost is at most half the strong model's wins (the cheapest set when none is).

    Returns:
        The proposers, cheapest first (empty when fewer than two models are cheap enough), and a record
        of the choice for the report.
    """
    means = np.nanmean(data.costs, axis=0)
    strong_cost = float(means[data.models.index(strong)])
    cheap = sorted(
        (m for i, m in enumerate(data.models) if m != strong and means[i] <= cheap_share * strong_cost),
        key=lambda m: float(means[data.models.index(m)]),
    )
    if len(cheap) < 2:
        return [], {
            "candidates": cheap,
            "reason": f"fewer than two models cost at most {cheap_share:.0%} of {strong}'s",
        }
    tried: list[tuple[float, float, tuple[str, ...]]] = []
    for k in range(2, min(MAX_PROPOSERS, len(cheap)) + 1):
        for combo in itertools.combinations(cheap, k):
            q, c = simulate_agreement(data, index, combo, strong)
            tried.append((q, c, combo))
    within = [t for t in tried if t[1] <= 0.5 * strong_cost]
    q, c, best = max(within, key=lambda t: (t[0], -t[1])) if within else min(tried, key=lambda t: t[1])
    record = {
        "candidates": cheap,
        "sets_tried": len(tried),
        "chosen": list(best),
        "train_estimate": {"quality": _round(q), "cost": _round(c, 8)},
    }
    return list(best), record


def operating_point(points: Sequence[Mapping[str, Any]], bar: float) -> int:
    """Return the index of the cheapest point whose quality reaches `bar`, else of the best-quality one."""
    reaching = [i for i, p in enumerate(points) if p["quality"] >= bar - _EPS]
    if reaching:
        return min(reaching, key=lambda i: (points[i]["cost"], -points[i]["quality"]))
    return max(range(len(points)), key=lambda i: (points[i]["quality"], -points[i]["cost"]))


def curve_entry(
    points: Sequence[Mapping[str, Any]], chosen: int, best_single: Mapping[str, Any], cost_range: tuple[float, float]
) -> dict[str, Any]:
    """Return one method's report entry from its test points and the index of its operating point.

    Args:
        points: One dict per setting, each with `quality` and `cost` (means over the test queries) and
            whatever describes the setting.
        chosen: Index of the operating point (chosen on out-of-fold runs over train, never on test).
        best_single: The best single model's test `quality` and `cost`.
        cost_range: (cheapest, dearest) single model's test cost, for the AIQ.
    """
    bar_q, bar_c = float(best_single["quality"]), float(best_single["cost"])
    # Compared as reported (6 digits), so that a point equal to the best single model is not 'better' by noise.
    shown = [(float(_round(p["quality"]) or 0.0), float(_round(p["cost"], 8) or 0.0)) for p in points]
    reaching = [c for q, c in shown if q >= bar_q - _EPS]
    within = [q for q, c in shown if c <= bar_c + _EPS]
    q_at, c_at = shown[chosen]
    cheaper = min(reaching) if reaching else None
    beats = q_at > bar_q + _EPS or (q_at >= bar_q - _EPS and c_at < bar_c - _EPS)
    at = points[chosen]
    return {
        "quality": _round(at["quality"]),
        "cost": _round(at["cost"], 8),
        "cost_ratio": _round(at["cost"] / bar_c, 4) if bar_c > 0 else None,
        "beats_best_single": bool(beats),
        "curve_beats_best_single": bool(
            (cheaper is not None and cheaper < bar_c - _EPS) or any(q > bar_q + _EPS for q in within)
        ),
        "curve": [dict(p) | {"quality": _round(p["quality"]), "cost": _round(p["cost"], 8)} for p in points],
        "aiq": _round(aiq([(p["cost"], p["quality"]) for p in points], *cost_range)),
        "cost_at_best_single_quality": _round(cheaper, 8),
        "cost_ratio_at_best_single_quality": _round(cheaper / bar_c, 4) if cheaper is not None and bar_c else None,
        "quality_at_best_single_cost": _round(max(within)) if within else None,
    }


def format_table(report: Mapping[str, Any]) -> str:
    """Return the report as a plain-text table: one line per method, then the references.

    'beats best-1' is the operating point's verdict (chosen on out-of-fold runs over train): 'NO' when the
    method does not beat the best single model there; the curve's own best reading is in the '$ @ best-1 q'
    columns.
    """
    bs, orc = report["best_single"], report["oracle"]
    header = ("method", "quality", "cost $", "ratio", "$ @ best-1 q", "ratio", "q @ best-1 $", "AIQ", "beats best-1")
    rows = [header]
    for name, m in report["methods"].items():
        rows.append(
            (
                name,
                fmt_cell(m["quality"], ".4f"),
                fmt_cell(m["cost"], ".6f"),
                fmt_cell(m["cost_ratio"], ".1%"),
                fmt_cell(m["cost_at_best_single_quality"], ".6f"),
                fmt_cell(m["cost_ratio_at_best_single_quality"], ".1%"),
                fmt_cell(m["quality_at_best_single_cost"], ".4f"),
                fmt_cell(m["aiq"], ".4f"),
                "(itself)"
                if name == "best_single"
                else "yes"
                if m["beats_best_single"]
                else "NO" + (" (curve: yes)" if m["curve_beats_best_single"] else ""),
            )
        )
    rows.append(
        (f"best single ({bs['model']})", fmt_cell(bs["quality"], ".4f"), fmt_cell(bs["cost"], ".6f"), "100.0%")
        + ("",) * 5
    )
    rows.append(("oracle", fmt_cell(orc["quality"], ".4f"), fmt_cell(orc["cost"], ".6f")) + ("",) * 6)
    return aligned(rows)
