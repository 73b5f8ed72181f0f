"""The shared shape of every score predictor: fit on embeddings, predict on embeddings or on text."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from moai.scorer.encoders import DEFAULT_ENCODER, SentenceEncoder, TextEncoder, encoder_from_name

__all__ = ["FloatArray", "ScorePredictor", "as_costs", "as_embeddings", "as_scores", "nan_mse", "validation_rows"]

FloatArray = npt.NDArray[np.float64]
F32Array = npt.NDArray[np.float32]

VALIDATION_FRACTION = 0.1
"""Share of the training queries held out to choose epochs or k (never the test split)."""


def as_embeddings(embeddings: npt.ArrayLike) -> F32Array:
    """Return embeddings as a 2-D float32 array."""
    arr = np.asarray(embeddings, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [queries, dim], got shape {arr.shape}")
    return arr


def as_scores(scores: npt.ArrayLike, n: int, m: int) -> FloatArray:
    """Return scores as a float64 [n, m] array (NaN = no line), checking shape and range."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != (n, m):
        raise ValueError(f"scores must have shape {(n, m)} (queries x models), got {arr.shape}")
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("scores must lie in [0, 1] (NaN for a missing line)")
    return arr


def as_costs(costs: npt.ArrayLike, n: int, m: int) -> FloatArray:
    """Return costs as a float64 [n, m] array (NaN = unknown), checking shape and sign."""
    arr = np.asarray(costs, dtype=np.float64)
    if arr.shape != (n, m):
        raise ValueError(f"costs must have shape {(n, m)} (queries x models), got {arr.shape}")
    if (arr[np.isfinite(arr)] < 0).any():
        raise ValueError("costs must be >= 0 (NaN for an unknown one)")
    return arr


def nan_mse(pred: FloatArray, true: FloatArray) -> float:
    """Return the mean squared error over the entries where `true` is known."""
    mask = np.isfinite(true)
    if not mask.any():
        return float("nan")
    return float(np.mean((pred[mask] - true[mask]) ** 2))


def validation_rows(n: int, seed: int, fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Return (fit rows, validation rows): a seeded split of range(n); validation is empty when n < 20."""
    if n < 20:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    n_val = max(1, round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class ScorePredictor(ABC):
    """Predicts, from a query's embedding, each model's score in [0, 1].

    Subclasses implement `fit`, `predict_embeddings` and the state round-trip; `predict` (the `Predictor`
    protocol) encodes the queries first.

    Attributes:
        method: Registry name of the method.
        models: Column order of predictions, fixed by `fit` (and grown by `add_model`).
        encoder: Turns queries into embeddings for `predict`; built from `encoder_name` when first needed.
        seed: Seed of the last `fit`.
        fit_costs: The training costs the last `fit` was given (None: none).
    """

    method: ClassVar[str] = ""
    trainable: ClassVar[bool] = True

    def __init__(self, *, encoder: TextEncoder | None = None, encoder_name: str | None = None) -> None:
        self.models: tuple[str, ...] = ()
        self.seed = 0
        self.fit_costs: FloatArray | None = None
        self._encoder = encoder
        if encoder_name is not None:
            self.encoder_name = encoder_name
        elif encoder is not None:
            self.encoder_name = encoder.name
        else:
            self.encoder_name = SentenceEncoder(DEFAULT_ENCODER).name

    @property
    def encoder(self) -> TextEncoder:
        """The query encoder (built lazily from `encoder_name`)."""
        if self._encoder is None:
            self._encoder = encoder_from_name(self.encoder_name)
        return self._encoder

    @encoder.setter
    def encoder(self, value: TextEncoder) -> None:
        self._encoder = value
        self.encoder_name = value.name

    def fit(
        self,
        embeddings: npt.ArrayLike,
        scores: npt.ArrayLike,
        models: Sequence[str],
        seed: int = 0,
        *,
        tasks: Sequence[str] | None = None,
        costs: npt.ArrayLike | None = None,
        progress: bool = False,
    ) -> ScorePredictor:
        """Learn from training queries.

        Args:
            embeddings: [queries, dim] query embeddings (L2-normalised).
            scores: [queries, models] true scores in [0, 1], NaN where a model has no line.
            models: Model names, one per score column.
            seed: Seeds every random choice: the same inputs and seed give the same predictor.
            tasks: Each query's task, a training label (the per-task baseline also reads it when predicting;
                others may ignore it).
            costs: [queries, models] US dollars per answer, NaN where unknown (None: no costs); a method
                may use them to choose its settings for the cost-aware selector.
            progress: Show a progress bar.

        Returns:
            The predictor itself.
        """
        emb = as_embeddings(embeddings)
        s = as_scores(scores, emb.shape[0], len(models))
        self.models, self.seed = tuple(models), seed
        self.fit_costs = as_costs(costs, emb.shape[0], len(models)) if costs is not None else None
        self._fit(emb, s, tasks=tasks, progress=progress)
        return self

    @abstractmethod
    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Learn from validated training data; `self.models`, `self.seed` and `self.fit_costs` are already set."""

    @abstractmethod
    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return predicted scores [queries, len(self.models)] in [0, 1]."""

    def predict(self, queries: Sequence[str], models: Sequence[str]) -> list[list[float]]:
        """Return one row of scores in [0, 1] per query, one column per named model.

        Raises:
            ValueError: A model is not one the predictor was trained for.
        """
        cols = [self.column(m) for m in models]
        if not queries:
            return []
        pred = self.predict_embeddings(self.encoder.encode(list(queries)))
        return [[float(row[c]) for c in cols] for row in pred]

    def column(self, model: str) -> int:
        """Return the prediction column of a model.

        Raises:
            ValueError: The model is unknown (the message lists the known ones).
        """
        try:
            return self.models.index(model)
        except ValueError:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join(self.models)}") from None

    def add_model(
        self,
        model: str,
        embeddings: npt.ArrayLike,
        scores: npt.ArrayLike,
        seed: int = 0,
        *,
        progress: bool = False,
    ) -> None:
        """Add a model to the pool, learning only what belongs to it from its rows.

        Args:
            model: The new model's name.
            embeddings: [n, dim] embeddings of queries the new model answered.
            scores: [n] its scores on them.
            seed: Seed of the added model's training.
            progress: Show a progress bar.

        Raises:
            ValueError: The model is already in the pool, or the inputs' shapes disagree.
        """
        raise NotImplementedError(f"{self.method!r} cannot add a model")

    def _check_new_model(self, model: str, embeddings: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[Any, Any]:
        if model in self.models:
            raise ValueError(f"model {model!r} is already in the pool ({', '.join(self.models)})")
        emb = as_embeddings(embeddings)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != emb.shape[0]:
            raise ValueError(f"{emb.shape[0]} embeddings but {s.shape[0]} scores")
        keep = np.isfinite(s)
        if not keep.any():
            raise ValueError(f"model {model!r} has no score to learn from")
        return emb[keep], as_scores(s[keep][:, None], int(keep.sum()), 1)[:, 0]

    @abstractmethod
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return (arrays, JSON-able config) that `from_state` turns back into an equal predictor."""

    @classmethod
    @abstractmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> ScorePredictor:
        """Rebuild a predictor from what `state` returned."""
