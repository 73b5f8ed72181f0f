"""Blend scorer: a task prior, per-model logistic regressions and kNN, mixed with weights chosen on validation.

Three views of a query's embedding, each a predicted score per model:

- prior: the query's task is predicted from its embedding (the share of each task among its 20 most
  similar training queries, whose task labels are training data); the prediction is each model's mean
  training score per task, weighted by that posterior. A query's own task label is never read at
  prediction time: real queries have none.
- logistic: one L2-regularised logistic regression per model on the embedding, trained on the (soft)
  scores with cross-entropy (a soft score s counts as a right answer with weight s and a wrong one with
  weight 1 - s).
- knn: each model's mean score over the k most similar training queries (`moai.scorer.predictors.knn`).

The blend is a convex combination of the three. Everything that is chosen (the logistic's C, kNN's k and
the three weights) is chosen on out-of-fold predictions over the training queries (5 seeded folds): C and k
by the squared error of the scores, the weights (a 0.1 grid over the simplex) by the routing the blend
makes on the held-out folds: without costs, the mean true score of each query's top-predicted model; with
costs, RouterBench's AIQ of the cost-quality curve that ``pred / cost ** alpha`` traces (the benchmark's
own selector). Ties keep the lower squared error, then the earlier grid point. The test split is never
seen. With fewer than 20 training queries nothing is chosen: C = 1, k = 20, equal weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import product
from typing import Any

import numpy as np
import numpy.typing as npt

from moai.scorer.predictors.base import F32Array, FloatArray, ScorePredictor, as_embeddings, nan_mse
from moai.scorer.predictors.baselines import nan_column_means
from moai.scorer.predictors.knn import _neighbour_means

__all__ = ["COMPONENTS", "C_CHOICES", "FOLDS", "K_CHOICES", "TASK_K", "BlendPredictor", "fold_rows"]

COMPONENTS = ("prior", "logistic", "knn")
"""The blended predictions, in the order of the weights."""
C_CHOICES = (0.1, 1.0)
"""Inverse L2 strengths of the per-model logistic regressions tried on validation (increasing)."""
K_CHOICES = (20, 50, 100, 200)
"""Neighbour counts tried on validation."""
TASK_K = 20
"""Neighbours that vote on a query's task (fixed a priori: benchmark prompts are easy to tell apart)."""
FOLDS = 5
"""Folds of the training queries for the out-of-fold predictions that choose C, k and the weights."""
WEIGHT_STEP = 0.1
"""Step of the grid over the simplex of blend weights."""
_MIN_ROWS = 20
_MAX_ITER = 1000
_CHUNK = 1024
_EPS = 1e-12


def fold_rows(n: int, seed: int, folds: int = FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return `folds` seeded (fit rows, held-out rows) pairs that hold out every row once; [] when n < 20."""
    if n < _MIN_ROWS:
        return []
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    parts = np.array_split(perm, folds)
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(part)) for i, part in enumerate(parts)]


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _fit_logistic(
    x: F32Array, s: FloatArray, cs: Sequence[float], threads: int | None = 1
) -> list[tuple[FloatArray, FloatArray]]:
    """Return (coef [M, d], intercept [M]) per C: soft-label logistic regressions, one per score column.

    Each column minimises ``sum over its known rows of BCE(sigmoid(x w + b), s) + |w|^2 / (2 C)`` (sklearn's
    objective with the soft score as the weight of a right answer). All columns are solved at once by
    L-BFGS in float64; each C starts from the previous one's solution (pass the Cs in increasing order).
    """
    import torch

    from moai.scorer.predictors._neural import torch_threads

    known = np.isfinite(s)
    out: list[tuple[FloatArray, FloatArray]] = []
    with torch_threads(threads):
        xt = torch.from_numpy(x.astype(np.float64))
        target = torch.from_numpy(np.where(known, s, 0.0))
        mask = torch.from_numpy(known.astype(np.float64))
        coef = torch.zeros(x.shape[1], s.shape[1], dtype=torch.float64, requires_grad=True)
        start = [_logit(float(v)) for v in nan_column_means(s, 0.5)]
        bias = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        for c in cs:
            opt = torch.optim.LBFGS(
                [coef, bias],
                lr=1.0,
                max_iter=_MAX_ITER,
                tolerance_grad=1e-6,
                tolerance_change=1e-10,
                history_size=20,
                line_search_fn="strong_wolfe",
            )

            def closure(c: float = c, opt: torch.optim.LBFGS = opt) -> torch.Tensor:
                opt.zero_grad()
                z = xt @ coef + bias
                bce = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
                loss = (bce * mask).sum() + (coef * coef).sum() / (2 * c)
                torch.autograd.backward(loss)
                return loss

            opt.step(closure)  # type: ignore[no-untyped-call]
            out.append((coef.detach().numpy().T.copy(), bias.detach().numpy().copy()))
    return out


def _task_posterior(queries: F32Array, train: F32Array, labels: np.ndarray, n_tasks: int) -> FloatArray:
    """Return [n, T]: the share of each task among each query's `TASK_K` most similar training queries."""
    out = np.zeros((len(queries), n_tasks))
    if n_tasks < 2:
        out[:] = 1.0
        return out
    k = min(TASK_K, len(train))
    for start in range(0, len(queries), _CHUNK):
        sims = queries[start : start + _CHUNK] @ train.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(len(idx)), k)
        np.add.at(out[start : start + len(idx)], (rows, labels[idx].ravel()), 1.0 / k)
    return out


def _task_means(s: FloatArray, labels: np.ndarray, n_tasks: int) -> FloatArray:
    overall = nan_column_means(s)
    means = np.stack([nan_column_means(s[labels == t], np.nan) for t in range(n_tasks)])
    out: FloatArray = np.where(np.isfinite(means), means, overall)
    return out


class BlendPredictor(ScorePredictor):
    """Task prior + per-model logistic regression + kNN, blended with weights chosen on validation.

    Args:
        folds: Folds of the training queries for the out-of-fold predictions.
        encoder: Query encoder for `predict`.
        encoder_name: Name of the encoder to build when `encoder` is not given.
    """

    method = "blend"

    def __init__(self, folds: int = FOLDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}")
        self.folds = folds
        self.tasks: tuple[str, ...] = ()
        self.c = 1.0
        self.k = K_CHOICES[0]
        self.weights = np.full(len(COMPONENTS), 1 / len(COMPONENTS))
        self.train_tasks = np.zeros(0, dtype=np.int64)
        self.task_means = np.zeros((1, 0))
        self.coef = np.zeros((0, 0))
        self.intercept = np.zeros(0)
        self.train_embeddings = np.zeros((0, 0), dtype=np.float32)
        self.train_scores = np.zeros((0, 0))
        self.validation: dict[str, Any] = {}

    # -- training -------------------------------------------------------------------------------------

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Choose C, k and the weights on out-of-fold predictions, then fit every part on all rows."""
        from tqdm.auto import tqdm

        names = list(tasks) if tasks is not None else [""] * len(s)
        if len(names) != len(s):
            raise ValueError(f"{len(s)} queries but {len(names)} tasks")
        self.tasks = tuple(sorted(set(names)))
        labels = np.searchsorted(np.asarray(self.tasks), np.asarray(names))
        folds = fold_rows(len(s), self.seed, self.folds)
        self.validation = {}
        if folds:
            oof: dict[str, FloatArray] = {}
            for fit, held in tqdm(folds, desc="blend folds", disable=not progress, leave=False):
                parts = self._fold_predictions(emb[fit], s[fit], labels[fit], emb[held])
                for key, pred in parts.items():
                    oof.setdefault(key, np.zeros(s.shape))[held] = pred
            self._choose(oof, s)
        else:
            self.c, self.k = 1.0, K_CHOICES[0]
            self.weights = np.full(len(COMPONENTS), 1 / len(COMPONENTS))
        self.train_tasks = labels.astype(np.int64)
        self.task_means = _task_means(s, labels, len(self.tasks))
        self.coef, self.intercept = _fit_logistic(emb, s, [self.c])[0]
        self.train_embeddings, self.train_scores = emb, s

    def _fold_predictions(
        self, emb: F32Array, s: FloatArray, labels: np.ndarray, held: F32Array
    ) -> dict[str, FloatArray]:
        """Return each component's held-out predictions, for every C and k tried."""
        out: dict[str, FloatArray] = {}
        posterior = _task_posterior(held, emb, labels, len(self.tasks))
        out["prior"] = posterior @ _task_means(s, labels, len(self.tasks))
        for c, (w, b) in zip(C_CHOICES, _fit_logistic(emb, s, C_CHOICES), strict=True):
            out[f"logistic:{c:g}"] = _sigmoid(held @ w.T + b)
        for k in K_CHOICES:
            out[f"knn:{k}"] = _neighbour_means(held, emb, s, k)
        return out

    def _choose(self, oof: dict[str, FloatArray], s: FloatArray) -> None:
        """Set C and k (least squared error), then the weights (best held-out routing)."""
        errors = {key: nan_mse(pred, s) for key, pred in oof.items()}
        self.c = min(C_CHOICES, key=lambda c: (errors[f"logistic:{c:g}"], c))
        self.k = min(K_CHOICES, key=lambda k: (errors[f"knn:{k}"], k))
        parts = [oof["prior"], oof[f"logistic:{self.c:g}"], oof[f"knn:{self.k}"]]
        objective = self._objective(s)
        steps = round(1 / WEIGHT_STEP)
        best: tuple[float, float, int] | None = None
        for index, (i, j) in enumerate(product(range(steps + 1), repeat=2)):
            if i + j > steps:
                continue
            w = np.array([i, j, steps - i - j]) / steps
            pred = w[0] * parts[0] + w[1] * parts[1] + w[2] * parts[2]
            key = (-objective(pred), nan_mse(pred, s), index)
            if best is None or key < best:
                best, self.weights = key, w
        assert best is not None
        self.validation = {
            "folds": self.folds,
            "mse": {key: round(value, 6) for key, value in errors.items()},
            "objective": "aiq" if self._costs() is not None else "quality",
            "objective_value": round(-best[0], 6),
            "single": {name: round(objective(pred), 6) for name, pred in zip(COMPONENTS, parts, strict=True)},
        }

    def _costs(self) -> FloatArray | None:
        """Return each model's mean training cost, or None when some model has none."""
        from moai.scorer.objective import model_costs

        return model_costs(self.fit_costs) if self.fit_costs is not None else None

    def _objective(self, s: FloatArray) -> Callable[[FloatArray], float]:
        """Return pred -> the held-out routing objective (AIQ with costs, else mean routed score)."""
        from moai.scorer.objective import ALPHAS, aiq, model_costs, route

        available = np.isfinite(s)
        rows = np.arange(len(s))
        true = np.where(available, s, 0.0)
        spent = self.fit_costs
        costs = model_costs(spent) if spent is not None else None
        if spent is None or costs is None:

            def quality(pred: FloatArray) -> float:
                return float(true[rows, route(pred, available)].mean())

            return quality
        spent = np.where(np.isfinite(spent), spent, costs)
        lo, hi = float(costs.min()), float(costs.max())

        def area(pred: FloatArray) -> float:
            points = []
            for alpha in ALPHAS:
                choice = route(pred, available, costs, alpha)
                points.append((float(spent[rows, choice].mean()), float(true[rows, choice].mean())))
            return aiq(points, lo, hi)

        return area

    # -- prediction and state -------------------------------------------------------------------------

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return the blended scores; `tasks` is ignored (the task is predicted from the embedding)."""
        emb = as_embeddings(embeddings)
        if self.train_scores.shape[0] == 0:
            raise ValueError("blend predictor is not trained: call fit() or load a checkpoint")
        parts = [self._prior(emb)]
        parts.append(_sigmoid(emb @ self.coef.T + self.intercept) if self.weights[1] > 0 else np.zeros_like(parts[0]))
        if self.weights[2] > 0:
            parts.append(_neighbour_means(emb, self.train_embeddings, self.train_scores, self.k))
        else:
            parts.append(np.zeros_like(parts[0]))
        out: FloatArray = np.clip(sum(w * p for w, p in zip(self.weights, parts, strict=True)), 0.0, 1.0)
        return out

    def _prior(self, emb: F32Array) -> FloatArray:
        out: FloatArray = self._posterior(emb) @ self.task_means
        return out

    def _posterior(self, emb: F32Array) -> FloatArray:
        return _task_posterior(emb, self.train_embeddings, self.train_tasks, len(self.tasks))

    def task_posterior(self, embeddings: npt.ArrayLike) -> dict[str, FloatArray]:
        """Return the predicted probability of each training task, per query."""
        post = self._posterior(as_embeddings(embeddings))
        return {task: post[:, i] for i, task in enumerate(self.tasks)}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return every part's arrays and the config (tasks, C, k, weights, validation)."""
        arrays: dict[str, np.ndarray] = {
            "train_tasks": self.train_tasks,
            "task_means": self.task_means,
            "coef": self.coef,
            "intercept": self.intercept,
            "train_embeddings": self.train_embeddings,
            "train_scores": self.train_scores,
            "weights": self.weights,
        }
        config: dict[str, Any] = {
            "models": list(self.models),
            "seed": self.seed,
            "encoder": self.encoder_name,
            "folds": self.folds,
            "tasks": list(self.tasks),
            "c": self.c,
            "k": self.k,
            "weights": dict(zip(COMPONENTS, (round(float(w), 4) for w in self.weights), strict=True)),
            "validation": self.validation,
        }
        return arrays, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> BlendPredictor:
        """Rebuild from `state`."""
        new = cls(folds=int(config["folds"]), encoder_name=config["encoder"])
        new.models, new.seed = tuple(config["models"]), int(config["seed"])
        new.tasks = tuple(config["tasks"])
        new.c, new.k = float(config["c"]), int(config["k"])
        new.validation = dict(config.get("validation", {}))
        for name in ("task_means", "coef", "intercept", "train_scores", "weights"):
            setattr(new, name, np.asarray(arrays[name], dtype=np.float64))
        new.train_tasks = np.asarray(arrays["train_tasks"], dtype=np.int64)
        new.train_embeddings = np.asarray(arrays["train_embeddings"], dtype=np.float32)
        return new
