"""The routing objective: pick each query's model by predicted quality / cost**alpha; score a cost-quality curve.

Shared by the learned predictors that choose their own settings on training folds (`blend`) and by the
routing benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from moai.scorer.predictors.base import FloatArray

__all__ = ["ALPHAS", "aiq", "model_costs", "route", "upper_hull"]

ALPHAS: tuple[float, ...] = (0.0, *(float(a) for a in np.geomspace(1e-4, 10.0, 400)))
"""Cost weights of the curve: 0, then a log grid from 0.0001 to 10, each 3% above the last (fixed a priori).

The curve's points are the only routings the cost metrics see, so the grid must be dense: a routing
changes at every alpha where some query's top two models swap, and a coarse grid steps over most of them.
At 10 every query goes to its cheapest model for any pool whose prices differ by more than a few percent.
"""

_COST_FLOOR = 1e-9
_EPS = 1e-12


def model_costs(costs: FloatArray) -> FloatArray | None:
    """Return each model's mean known cost per query, or None when some model has no known cost."""
    known = np.isfinite(costs)
    if not known.any(axis=0).all():
        return None
    means: FloatArray = np.where(known, costs, 0.0).sum(axis=0) / known.sum(axis=0)
    return means


def route(pred: FloatArray, available: np.ndarray, costs: FloatArray | None = None, alpha: float = 0.0) -> np.ndarray:
    """Return each query's chosen model: argmax of pred / cost**alpha among its available models.

    Ties go to the cheaper model (then to the lower column). A query with no available model gets -1.
    """
    order = np.argsort(costs, kind="stable") if costs is not None else np.arange(pred.shape[1])
    value = pred.astype(np.float64)
    if costs is not None and alpha:
        value = value / np.maximum(costs, _COST_FLOOR) ** alpha
    value = np.where(available, value, -np.inf)[:, order]
    choice = order[np.argmax(value, axis=1)]
    return np.where(available.any(axis=1), choice, -1)


def upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return the non-decreasing upper convex hull of (cost, quality) points, cheapest first.

    The hull is what mixing routers can reach; past its best quality it stays flat (spending more never
    has to lose quality), so only the points up to the cheapest best one are returned.
    """
    best_at: dict[float, float] = {}
    for c, q in points:
        best_at[c] = max(q, best_at.get(c, -math.inf))
    hull: list[tuple[float, float]] = []
    for p in sorted(best_at.items()):
        while len(hull) >= 2:
            (ox, oy), (ax, ay) = hull[-2], hull[-1]
            if (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    top = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[: top + 1]


def aiq(points: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """Return RouterBench's AIQ: the mean of the non-decreasing upper hull over costs [lo, hi].

    Below the cheapest point the hull is 0 (nothing is reachable for less); above the dearest it stays
    at its best quality.
    """
    hull = upper_hull(points)
    if hi - lo <= _EPS:
        return max(q for _, q in hull)
    area = 0.0
    for (c0, q0), (c1, q1) in pairwise(hull):
        a, b = max(c0, lo), min(c1, hi)
        if b > a:
            qa = q0 + (q1 - q0) * (a - c0) / (c1 - c0)
            qb = q0 + (q1 - q0) * (b - c0) / (c1 - c0)
            area += (b - a) * (qa + qb) / 2
    last_c, last_q = hull[-1]
    area += max(0.0, hi - max(last_c, lo)) * last_q
    return area / (hi - lo)
