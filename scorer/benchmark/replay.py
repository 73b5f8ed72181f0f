"""The online replay: route the test queries one by one in a fixed order, learning from each outcome.

The bandit (`moai.scorer.online.LinearBandit`) starts with no training data: every model's prior is the
same constant, so its first choices are the pool's order (or it starts from a scorer's scores, `priors`).
Each query is routed on the bandit's scores (exploring on the declared share), among the models that have
a line for it, and the bandit then learns the routed model's recorded score for it, and nothing else
(bandit feedback: the other models' scores are what a deployment never sees).

Two curves against the number of queries seen, n:

- `seen`: the gap recovered on the first n queries, as they were routed (what users got, exploration
  included);
- `rest`: the gap recovered on the queries after the n-th by the bandit frozen at n, greedy (what the
  learned policy is worth from then on), against the best single model and oracle of those queries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from moai.mix_instructions.schema import Learn
from moai.scorer.data.routing import RoutingData
from moai.scorer.online import LinearBandit, features

__all__ = ["CHECKPOINTS", "ONLINE_METHODS", "online_entry", "replay"]

CHECKPOINTS = (100, 250, 500, 1000, 2000, 3000, 5000, 7500, 10000)
"""Numbers of queries seen at which the curves are read (those past the test size are skipped)."""

_PRIOR = 0.5


def _gap(quality: float, single: float, best: float) -> float | None:
    span = best - single
    return (quality - single) / span if span > 1e-12 else None


def _references(scores: np.ndarray) -> tuple[float, float]:
    """Return (best single model's mean, oracle's mean) over rows, each model over the rows it answered."""
    known = np.isfinite(scores)
    means = np.where(known, scores, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    means = np.where(known.any(axis=0), means, -np.inf)
    return float(means.max()), float(np.where(known, scores, -np.inf).max(axis=1).mean())


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits) + 0.0


def replay(
    test: RoutingData,
    embeddings: np.ndarray,
    *,
    method: Literal["linucb", "thompson"] = "linucb",
    explore: float = 0.1,
    prior_strength: float = 1.0,
    width: float = 0.3,
    scale: float = 1.0,
    feedback: Literal["chosen", "all"] = "chosen",
    priors: np.ndarray | None = None,
    seed: int = 0,
    checkpoints: Sequence[int] = CHECKPOINTS,
) -> tuple[dict[str, Any], np.ndarray]:
    """Replay `test` through a bandit that starts from nothing; return its report and its choices.

    The report holds the quality, the share explored, each model's share, the curves and the settings;
    the choices are the column routed to for each query of `test`, in `test`'s order (-1: no line).

    Args:
        test: The queries, with every model's recorded score (NaN: no line).
        embeddings: Their embeddings, row-aligned.
        method: 'linucb' or 'thompson'.
        explore: Share of decisions that explore.
        prior_strength: The ridge (observations the constant prior is worth).
        width: Exploration width.
        scale: Norm of the embedding features (see `features`).
        feedback: 'chosen' learns the routed model's score only (what a deployment sees); 'all' learns
            every model's score of each query (an upper bound: a panel whose judge scores every answer).
        priors: The scorer's scores [queries, models] the bandit starts from (e.g. a zero-shot scorer's);
            None: the same constant for every model (no data at all).
        seed: Seeds the order of the queries and the exploration draws.
        checkpoints: Numbers of queries seen at which the curves are read.
    """
    rng = np.random.default_rng([seed, 4242])
    order = rng.permutation(len(test))
    scores = test.scores[order]
    xs = np.stack([features(e, scale) for e in embeddings[order]])
    bandit = LinearBandit(test.models, xs.shape[1], prior_strength, method, width)
    given = np.full(test.scores.shape, _PRIOR) if priors is None else np.asarray(priors, dtype=np.float64)
    if given.shape != test.scores.shape:
        raise ValueError(f"priors must have shape {test.scores.shape}, got {given.shape}")
    prior_rows = np.clip(np.nan_to_num(given[order], nan=_PRIOR), 0.0, 1.0)
    known = np.isfinite(scores)
    got = np.full(len(test), np.nan)
    choice = np.full(len(test), -1)
    marks = sorted({n for n in checkpoints if 0 < n <= len(test)} | {len(test)})
    curve: list[dict[str, Any]] = []
    explored = 0
    for i in range(len(test)):
        cols = np.flatnonzero(known[i])
        if len(cols):
            explore_now = bool(rng.random() < explore)
            explored += explore_now
            allowed = {test.models[c]: float(prior_rows[i, c]) for c in cols}
            ranked = bandit.scores(xs[i], allowed, explore_now, rng)
            pick = max(cols, key=lambda c: (ranked[test.models[c]], -c))
            choice[i], got[i] = pick, scores[i, pick]
            for c in cols if feedback == "all" else [pick]:
                bandit.add_values(test.models[c], xs[i], float(prior_rows[i, c]), float(scores[i, c]))
        if i + 1 in marks:
            n = i + 1
            single, best = _references(scores[:n])
            point: dict[str, Any] = {"n": n, "seen_quality": _round(float(np.nanmean(got[:n])))}
            point["seen_gap"] = _round(_gap(float(np.nanmean(got[:n])), single, best))
            if n < len(test):
                rest = scores[n:]
                pred = bandit.means_batch(xs[n:], prior_rows[n:])
                pred = np.where(np.isfinite(rest), pred, -np.inf)
                picked = pred.argmax(axis=1)
                rows = np.flatnonzero(np.isfinite(rest).any(axis=1))
                quality = float(rest[rows, picked[rows]].mean())
                r_single, r_best = _references(rest)
                point["rest_quality"] = _round(quality)
                point["rest_gap"] = _round(_gap(quality, r_single, r_best))
            curve.append(point)
    routed = choice[choice >= 0]
    in_order = np.full(len(test), -1)
    in_order[order] = choice
    return {
        "quality": _round(float(np.nanmean(got))),
        "explored_share": _round(explored / max(len(routed), 1), 4),
        "shares": {
            test.models[m]: round(float(np.mean(routed == m)), 4)
            for m in range(len(test.models))
            if np.any(routed == m)
        },
        "curve": curve,
        "settings": {
            "method": method,
            "explore": explore,
            "prior_strength": prior_strength,
            "width": width,
            "scale": scale,
            "feedback": feedback,
            "order_seed": seed,
        },
    }, in_order


ONLINE_METHODS: dict[str, tuple[bool, Literal["chosen", "all"]]] = {
    "online": (False, "chosen"),
    "online_described": (True, "chosen"),
    "online_panel": (False, "all"),
    "online_panel_described": (True, "all"),
}
"""The online replays the benchmark runs, by name: (starts from the descriptions' scores, feedback).

'chosen' learns the routed model's score only (a user's feedback on the answer they got); 'all' learns
every model's score of each query (a panel whose judge scores each model's answer, `gate.learn.sources:
[judge]` in a mix that asks every model). Without the descriptions, every model starts at the same prior.
"""


def online_entry(
    test: RoutingData,
    embeddings: np.ndarray,
    seed: int = 0,
    *,
    priors: np.ndarray | None = None,
    feedback: Literal["chosen", "all"] = "chosen",
) -> tuple[dict[str, Any], np.ndarray]:
    """Return the replay's report with `gate.learn`'s defaults, and its routing as one-hot predictions.

    The defaults were chosen on replays of RouterDC's train split, never on test.

    Args:
        test: The queries, with every model's recorded score.
        embeddings: Their embeddings (the gate's encoder's), row-aligned.
        seed: Seeds the order of the queries and the exploration draws.
        priors: The scores [queries, models] the bandit starts from (None: the same for every model).
        feedback: 'chosen' or 'all' (see `replay`).
    """
    learn = Learn()
    report, choice = replay(
        test,
        embeddings,
        method=learn.method,
        explore=learn.explore,
        prior_strength=learn.prior_strength,
        width=learn.width,
        scale=learn.scale,
        feedback=feedback,
        priors=priors,
        seed=seed,
    )
    report["settings"]["prior"] = "given" if priors is not None else "flat"
    pred = np.zeros(test.scores.shape)
    rows = np.flatnonzero(choice >= 0)
    pred[rows, choice[rows]] = 1.0
    return report, pred
