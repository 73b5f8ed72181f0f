"""kNN scorer: a model's predicted score is its mean score on the k most similar training queries.

Similarity is the cosine of the (L2-normalised) embeddings. Holes are respected per model: a model's
neighbours are the nearest training queries that model has a score for. k is chosen on a validation
split carved from the training queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from moai.scorer.predictors.base import F32Array, FloatArray, ScorePredictor, as_embeddings, nan_mse, validation_rows
from moai.scorer.predictors.baselines import nan_column_means

__all__ = ["K_CHOICES", "KnnPredictor"]

K_CHOICES = (10, 20, 35, 50, 100)
"""Neighbour counts tried on the validation split."""

_CHUNK = 1024


def _neighbour_means(queries: np.ndarray, train: np.ndarray, scores: FloatArray, k: int) -> FloatArray:
    """Return, per query and model, the mean score over the k nearest training rows that model has."""
    known = np.isfinite(scores)
    filled = np.where(known, scores, 0.0)
    fallback = nan_column_means(scores)
    n, m = queries.shape[0], scores.shape[1]
    out = np.empty((n, m))
    dense = bool(known.all())
    for start in range(0, n, _CHUNK):
        sims = queries[start : start + _CHUNK] @ train.T
        stop = start + sims.shape[0]
        if dense:
            kk = min(k, train.shape[0])
            idx = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            out[start:stop] = filled[idx].mean(axis=1)
            continue
        for col in range(m):
            have = int(known[:, col].sum())
            if have == 0:
                out[start:stop, col] = fallback[col]
                continue
            kk = min(k, have)
            masked = np.where(known[:, col], sims, -np.inf)
            idx = np.argpartition(-masked, kk - 1, axis=1)[:, :kk]
            out[start:stop, col] = filled[idx, col].mean(axis=1)
    return out


class KnnPredictor(ScorePredictor):
    """Mean score of the k nearest training queries, per model (NaN-aware).

    Args:
        k: Neighbours; None chooses among `K_CHOICES` on a validation split of the training queries.
        encoder: Query encoder for `predict`.
        encoder_name: Name of the encoder to build when `encoder` is not given.
    """

    method = "knn"

    def __init__(self, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k_requested = k
        self.k = k or K_CHOICES[0]
        self.train_embeddings = np.zeros((0, 0), dtype=np.float32)
        self.train_scores = np.zeros((0, 0))
        self.validation: dict[str, float] = {}

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Store the training queries; choose k on a validation split when none was given."""
        if self.k_requested is None:
            fit_rows, val_rows = validation_rows(len(emb), self.seed)
            if len(val_rows):
                losses = {
                    k: nan_mse(_neighbour_means(emb[val_rows], emb[fit_rows], s[fit_rows], k), s[val_rows])
                    for k in K_CHOICES
                }
                self.validation = {f"k={k}": v for k, v in losses.items()}
                self.k = min(losses, key=lambda k: (losses[k], k))
        else:
            self.k = self.k_requested
        self.train_embeddings, self.train_scores = emb, s

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return each model's mean score over its k nearest training queries."""
        emb = as_embeddings(embeddings)
        return _neighbour_means(emb, self.train_embeddings, self.train_scores, self.k)

    def add_model(
        self, model: str, embeddings: npt.ArrayLike, scores: npt.ArrayLike, seed: int = 0, *, progress: bool = False
    ) -> None:
        """Add the model's rows: a query already stored gets the new score, a new query becomes a row."""
        emb, s = self._check_new_model(model, embeddings, scores)
        rows = {self.train_embeddings[i].tobytes(): i for i in range(len(self.train_embeddings))}
        column = np.full(len(self.train_embeddings), np.nan)
        extra_emb: list[np.ndarray] = []
        extra_scores: list[float] = []
        for vector, score in zip(emb, s, strict=True):
            row = rows.get(vector.tobytes())
            if row is None:
                extra_emb.append(vector)
                extra_scores.append(float(score))
            else:
                column[row] = score
        old = np.concatenate([self.train_scores, column[:, None]], axis=1)
        if extra_emb:
            new = np.full((len(extra_emb), old.shape[1]), np.nan)
            new[:, -1] = extra_scores
            old = np.concatenate([old, new])
            self.train_embeddings = np.concatenate([self.train_embeddings, np.stack(extra_emb)])
        self.train_scores = old
        self.models = (*self.models, model)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return the training embeddings and scores, and the config."""
        arrays: dict[str, np.ndarray] = {"train_embeddings": self.train_embeddings, "train_scores": self.train_scores}
        config: dict[str, Any] = {
            "models": list(self.models),
            "seed": self.seed,
            "encoder": self.encoder_name,
            "k": self.k,
            "validation": self.validation,
        }
        return arrays, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> KnnPredictor:
        """Rebuild from `state`."""
        new = cls(k=int(config["k"]), encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        new.validation = dict(config.get("validation", {}))
        new.train_embeddings = np.asarray(arrays["train_embeddings"], dtype=np.float32)
        new.train_scores = np.asarray(arrays["train_scores"], dtype=np.float64)
        return new
