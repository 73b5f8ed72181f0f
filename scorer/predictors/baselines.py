"""Baselines every learned scorer must beat: random, best single model, per-task best model, and the oracle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from moai.scorer.predictors.base import F32Array, FloatArray, ScorePredictor, as_embeddings

__all__ = ["BestSinglePredictor", "OraclePredictor", "PerTaskPredictor", "RandomPredictor", "nan_column_means"]


def nan_column_means(scores: FloatArray, fallback: float = 0.0) -> FloatArray:
    """Return each column's mean over its known entries (`fallback` for a column with none)."""
    known = np.isfinite(scores)
    total = np.where(known, scores, 0.0).sum(axis=0)
    count = known.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)


class RandomPredictor(ScorePredictor):
    """Uniform random scores: the floor. Seeded, and the same for the same queries in the same order."""

    method = "random"

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Nothing to learn: the models and the seed are all it needs."""

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return uniform random scores."""
        n = as_embeddings(embeddings).shape[0]
        return np.random.default_rng([self.seed, 104729]).random((n, len(self.models)))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return no arrays; the config holds the seed."""
        return {}, {"models": list(self.models), "seed": self.seed, "encoder": self.encoder_name}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> RandomPredictor:
        """Rebuild from `state`."""
        new = cls(encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        return new


class BestSinglePredictor(ScorePredictor):
    """Every query gets each model's mean training score: routes everything to the best model on train."""

    method = "best_single"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.means = np.zeros(0)

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Average each model's training scores."""
        self.means = nan_column_means(s)

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return the training means, the same for every query."""
        n = as_embeddings(embeddings).shape[0]
        return np.tile(self.means, (n, 1))

    def add_model(
        self, model: str, embeddings: npt.ArrayLike, scores: npt.ArrayLike, seed: int = 0, *, progress: bool = False
    ) -> None:
        """Add the model's mean score over its rows."""
        _, s = self._check_new_model(model, embeddings, scores)
        self.means = np.append(self.means, s.mean())
        self.models = (*self.models, model)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return the means and the config."""
        return {"means": self.means}, {"models": list(self.models), "seed": self.seed, "encoder": self.encoder_name}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> BestSinglePredictor:
        """Rebuild from `state`."""
        new = cls(encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        new.means = np.asarray(arrays["means"], dtype=np.float64)
        return new


class PerTaskPredictor(ScorePredictor):
    """Each model's mean training score on the query's task (overall mean for an unknown or missing task)."""

    method = "per_task"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tasks: tuple[str, ...] = ()
        self.task_means = np.zeros((0, 0))
        self.means = np.zeros(0)

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Average each model's training scores per task."""
        self.means = nan_column_means(s)
        labels = list(tasks) if tasks is not None else [""] * len(s)
        self.tasks = tuple(sorted(set(labels)))
        rows = np.asarray([self.tasks.index(t) for t in labels])
        self.task_means = np.stack([nan_column_means(s[rows == i], np.nan) for i in range(len(self.tasks))])
        # A task where a model has no line falls back to that model's overall mean.
        self.task_means = np.where(np.isfinite(self.task_means), self.task_means, self.means)

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return the mean scores of each query's task."""
        n = as_embeddings(embeddings).shape[0]
        out = np.tile(self.means, (n, 1))
        if tasks is not None:
            index = {t: i for i, t in enumerate(self.tasks)}
            for row, task in enumerate(tasks):
                if task in index:
                    out[row] = self.task_means[index[task]]
        return out

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return the means per task and the config."""
        config = {"models": list(self.models), "seed": self.seed, "encoder": self.encoder_name, "tasks": self.tasks}
        return {"means": self.means, "task_means": self.task_means}, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> PerTaskPredictor:
        """Rebuild from `state`."""
        new = cls(encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        new.tasks = tuple(config["tasks"])
        new.means = np.asarray(arrays["means"], dtype=np.float64)
        new.task_means = np.asarray(arrays["task_means"], dtype=np.float64).reshape(len(new.tasks), -1)
        return new


class OraclePredictor(ScorePredictor):
    """Knows the true scores of the queries it is asked about: the ceiling, for evaluation only.

    `fit` takes the scores of the queries that `predict_embeddings` will then be asked about, in order.
    """

    method = "oracle"
    trainable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores = np.zeros((0, 0))

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Remember the true scores (missing lines score 0)."""
        self.scores = np.nan_to_num(s, nan=0.0)

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return the remembered true scores.

        Raises:
            ValueError: Asked about a different number of queries than it was given.
        """
        n = as_embeddings(embeddings).shape[0]
        if n != self.scores.shape[0]:
            raise ValueError(f"the oracle knows {self.scores.shape[0]} queries, asked about {n}")
        return self.scores.copy()

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return the scores and the config."""
        return {"scores": self.scores}, {"models": list(self.models), "seed": self.seed, "encoder": self.encoder_name}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> OraclePredictor:
        """Rebuild from `state`."""
        new = cls(encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        new.scores = np.asarray(arrays["scores"], dtype=np.float64)
        return new
