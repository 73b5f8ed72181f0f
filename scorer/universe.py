"""The universe constructor (Routoo): choose the M most complementary models of a larger pool, greedily.

A pool is only as good as the queries it covers: two strong models that are right on the same queries add
little over one of them, while a weaker model that is right where the strong one fails adds a lot. The
coverage of a set S of models is the mean over queries of the best utility a model of S offers::

    f(S) = mean_q max_{m in S} u(q, m),    u(q, m) = score(q, m) - W * cost(q, m) / c_max

with f({}) = 0. ``W`` (the cost weight, 0 by default) prices a model's dollars per query in quality
points, relative to the dearest model's mean cost ``c_max``: with W = 1 spending as much as the dearest
model costs on average is worth a whole quality point. f is a facility-location function: monotone (for
W = 0) and submodular, so adding, one at a time, the model with the largest marginal gain is within
1 - 1/e of the best set of that size (Nemhauser et al., 1978), and each pick's gain is at most the one
before it. A model without a line for a query cannot serve it (utility 0 there); a missing cost is the
model's mean cost. Ties go to the cheaper model, then to the earlier column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Pick", "coverage", "greedy_universe", "utilities"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pick:
    """One step of the greedy choice.

    Attributes:
        model: The model added.
        gain: What it added to the coverage (its marginal gain).
        coverage: The coverage of the set once it is in.
        quality: Mean best true score over the set once it is in (the set's oracle, cost aside).
        cost: Mean cost per query of the model (None without costs).
    """

    model: str
    gain: float
    coverage: float
    quality: float
    cost: float | None


def utilities(scores: npt.ArrayLike, costs: npt.ArrayLike | None = None, cost_weight: float = 0.0) -> FloatArray:
    """Return u(q, m): the score less the weighted relative cost; 0 where a model has no line.

    Args:
        scores: [queries, models] true (or predicted) scores in [0, 1], NaN where a model has no line.
        costs: [queries, models] US dollars per query, NaN where unknown (None: no costs).
        cost_weight: W, quality points per the dearest model's mean cost (0 ignores costs).

    Raises:
        ValueError: The weight is negative or not finite, shapes disagree, or a cost weight is given
            without a known cost for every model.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [queries, models], got shape {s.shape}")
    if not math.isfinite(cost_weight) or cost_weight < 0:
        raise ValueError(f"cost weight must be a finite number >= 0, got {cost_weight}")
    known = np.isfinite(s)
    u = np.where(known, s, 0.0)
    if cost_weight == 0:
        return u
    mean_cost = _mean_costs(costs, s.shape)
    if mean_cost is None:
        raise ValueError("a cost weight needs a known cost for every model; the data has none for some")
    c = np.asarray(costs, dtype=np.float64)
    c = np.where(np.isfinite(c), c, mean_cost)
    scale = float(mean_cost.max())
    penalty = cost_weight * c / scale if scale > 0 else np.zeros_like(c)
    out: FloatArray = np.where(known, u - penalty, 0.0)
    return out


def _mean_costs(costs: npt.ArrayLike | None, shape: tuple[int, ...]) -> FloatArray | None:
    if costs is None:
        return None
    c = np.asarray(costs, dtype=np.float64)
    if c.shape != shape:
        raise ValueError(f"costs must have the scores' shape {shape}, got {c.shape}")
    known = np.isfinite(c)
    if not known.any(axis=0).all():
        return None
    means: FloatArray = np.where(known, c, 0.0).sum(axis=0) / known.sum(axis=0)
    return means


def coverage(values: npt.ArrayLike, chosen: Sequence[int]) -> float:
    """Return f(S): the mean over queries of the best value among the chosen columns (0 for none)."""
    v = np.asarray(values, dtype=np.float64)
    if not chosen or v.shape[0] == 0:
        return 0.0
    return float(v[:, list(chosen)].max(axis=1).mean())


def greedy_universe(
    scores: npt.ArrayLike,
    models: Sequence[str],
    size: int,
    *,
    costs: npt.ArrayLike | None = None,
    cost_weight: float = 0.0,
) -> list[Pick]:
    """Choose `size` models greedily by marginal gain in coverage; return the picks in order.

    Args:
        scores: [queries, models] scores in [0, 1], NaN where a model has no line.
        models: Model names, one per column.
        size: How many models to choose (1 to the pool's size).
        costs: [queries, models] US dollars per query, NaN where unknown (None: no costs).
        cost_weight: W of the module docstring (0: coverage of quality alone).

    Raises:
        ValueError: The size is out of range (the message gives the range), or the inputs disagree.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(models):
        raise ValueError(f"scores must have shape [queries, {len(models)}] (one column per model), got {s.shape}")
    if s.shape[0] == 0:
        raise ValueError("no queries to cover")
    if not 1 <= size <= len(models):
        raise ValueError(f"size must be between 1 and {len(models)} (the pool's size), got {size}")
    u = utilities(s, costs, cost_weight)
    mean_cost = _mean_costs(costs, s.shape)
    tie_cost = mean_cost if mean_cost is not None else np.zeros(len(models))
    quality = np.where(np.isfinite(s), s, 0.0)
    # best[q]: the best utility the chosen set offers query q; -inf until a model is chosen (f({}) = 0).
    best = np.full(s.shape[0], -np.inf)
    chosen: list[int] = []
    picks: list[Pick] = []
    covered = 0.0
    for _ in range(size):
        rest = [m for m in range(len(models)) if m not in chosen]
        totals = {m: float(np.maximum(best, u[:, m]).mean()) for m in rest}
        col = min(rest, key=lambda m: (-totals[m], tie_cost[m], m))
        best = np.maximum(best, u[:, col])
        chosen.append(col)
        gain, covered = totals[col] - covered, totals[col]
        picks.append(
            Pick(
                model=models[col],
                gain=gain,
                coverage=covered,
                quality=coverage(quality, chosen),
                cost=float(mean_cost[col]) if mean_cost is not None else None,
            )
        )
    return picks
