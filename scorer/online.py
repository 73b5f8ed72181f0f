"""Online learning for the gate: a contextual bandit over the query embedding, one ridge model per model.

Each model's score for a query is the mix's scorer's prediction (the prior: today's behaviour) plus a
learned linear correction, ``prior_m(q) + theta_m . x(q)``, where x is the query embedding with a bias
feature appended. The correction is ridge regression on the residuals ``reward - prior`` the model earned:
``A_m = lam I + sum x x^T``, ``b_m = sum (reward - prior) x``. The ridge ``lam`` is the prior's strength:
with unit-norm embeddings it weighs about as much as ``lam`` observations agreeing with the prior, so a
new bandit routes exactly as its scorer does and moves away from it only as evidence accumulates.

The statistics are sums, so observations from several processes are merged by adding them: nothing is
ever overwritten, and replaying the same observations in any order gives the same state.

Exploration is a declared share of decisions: on that share the scores are optimistic (LinUCB: mean plus
``width * sqrt(x^T A^-1 x)``) or sampled (Thompson: one draw of each score's posterior); on the rest they
are the posterior means. The caller applies the hard constraints before the bandit ranks anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["LinearBandit", "Observation", "features"]

FloatArray = npt.NDArray[np.float64]


def features(embedding: Sequence[float] | npt.NDArray[np.floating], scale: float = 1.0) -> FloatArray:
    """Return the bandit's features of a query: its embedding scaled to norm `scale`, and a bias feature 1.

    A `scale` below 1 makes the ridge weigh more on the embedding than on the bias: a model's mean score
    is learned from a few observations, how it varies with the query from many more.

    Non-finite entries count as 0, so no input can put a NaN into the statistics.
    """
    x = np.nan_to_num(np.asarray(embedding, dtype=np.float64).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    norm = float(np.linalg.norm(x))
    if norm > 0:
        x = x * (scale / norm)
    return np.append(x, 1.0)


@dataclass(frozen=True)
class Observation:
    """One outcome: a model's reward for a query, with the prior's prediction at the time."""

    model: str
    x: FloatArray
    """The query's features (see `features`)."""
    prior: float
    reward: float


def _clip01(value: float) -> float:
    return min(max(float(value), 0.0), 1.0) if math.isfinite(value) else 0.0


class LinearBandit:
    """Per-model ridge statistics over query features; the estimate is the prior plus the learned correction.

    Args:
        models: The pool (a model outside it is ignored when observed).
        dim: Number of features (embedding size + 1, see `features`).
        prior_strength: The ridge, in observations the prior is worth (> 0).
        method: 'linucb' or 'thompson'.
        width: LinUCB's confidence multiplier, and Thompson's posterior scale.
    """

    def __init__(
        self,
        models: Sequence[str],
        dim: int,
        prior_strength: float = 10.0,
        method: Literal["linucb", "thompson"] = "linucb",
        width: float = 0.3,
    ) -> None:
        if not prior_strength > 0 or not math.isfinite(prior_strength):
            raise ValueError(f"prior_strength must be a positive number, got {prior_strength}")
        self.models = list(models)
        self.dim = dim
        self.method = method
        self.width = width
        self.prior_strength = prior_strength
        # A^-1 is kept up to date with Sherman-Morrison, so a decision and an update each cost O(d^2).
        self._inv = {m: np.eye(dim) / prior_strength for m in self.models}
        self._b = {m: np.zeros(dim) for m in self.models}
        self._theta = {m: np.zeros(dim) for m in self.models}
        self.counts = dict.fromkeys(self.models, 0)

    def add(self, observation: Observation, weight: float = 1.0) -> None:
        """Add one observation to its model's statistics (an increment: order and process do not matter)."""
        m = observation.model
        if m not in self._inv or observation.x.shape != (self.dim,) or not weight > 0:
            return
        x = observation.x
        residual = _clip01(observation.reward) - _clip01(observation.prior)
        inv = self._inv[m]
        ix = inv @ x
        inv -= weight * np.outer(ix, ix) / (1.0 + weight * float(x @ ix))
        self._b[m] += weight * residual * x
        self._theta[m] = inv @ self._b[m]
        self.counts[m] += 1

    def add_values(self, model: str, x: FloatArray, prior: float, reward: float, weight: float = 1.0) -> None:
        """Add one observation given by its parts (see `add`)."""
        self.add(Observation(model, x, prior, reward), weight)

    def means(self, x: FloatArray, priors: Mapping[str, float]) -> dict[str, float]:
        """Return each prior's model's estimated score for a query: the prior plus the correction, in [0, 1]."""
        return {m: _clip01(_clip01(p) + self._correction(m, x)) for m, p in priors.items()}

    def scores(
        self, x: FloatArray, priors: Mapping[str, float], explore: bool, rng: np.random.Generator | None = None
    ) -> dict[str, float]:
        """Return the scores the gate ranks on: the means, or optimistic/sampled ones when `explore`.

        Exploring scores are not clipped to [0, 1] above, so an uncertain model can outrank a known one.
        """
        if not explore:
            return self.means(x, priors)
        rng = rng or np.random.default_rng()
        out: dict[str, float] = {}
        for m, p in priors.items():
            mean = _clip01(p) + self._correction(m, x)
            spread = self.width * math.sqrt(max(float(x @ self._inv[m] @ x), 0.0)) if m in self._inv else 0.0
            bonus = spread if self.method == "linucb" else spread * float(rng.standard_normal())
            value = mean + bonus
            out[m] = max(value, 0.0) if math.isfinite(value) else 0.0
        return out

    def _correction(self, model: str, x: FloatArray) -> float:
        theta = self._theta.get(model)
        if theta is None or x.shape != theta.shape:
            return 0.0
        value = float(theta @ x)
        return value if math.isfinite(value) else 0.0

    def means_batch(self, xs: FloatArray, priors: FloatArray) -> FloatArray:
        """Return the estimated scores [queries, models] for a batch (benchmarks), priors [queries, models]."""
        theta = np.stack([self._theta[m] for m in self.models], axis=1)
        return np.clip(np.clip(priors, 0.0, 1.0) + xs @ theta, 0.0, 1.0)
