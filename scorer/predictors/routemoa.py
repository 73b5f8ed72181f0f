"""RouteMoA's scorer: query and model embeddings trained with dual contrastive losses, plus a score head.

RouteMoA (after RouterDC, Chen et al., 2024) embeds the query and keeps one learned embedding per model;
their cosine similarity says how suited the model is. Two contrastive losses shape the space:

- sample-LLM: for each query, the models that answered it best (top third of the pool by score, ties
  included) are pulled closer to the query than the models that answered it worst (bottom third);
- sample-sample: queries of the same cluster (k-means over the training embeddings) are pulled
  together and pushed away from queries of other clusters.

A score head turns the similarity into a score in [0, 1]: ``sigmoid(a * cos(q, m) + b_m)``, trained
with binary cross-entropy on the (soft) scores. The encoder is frozen here (embeddings precomputed); a
small MLP on top of it is the trainable query side.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from moai.scorer.predictors._neural import NeuralPredictor
from moai.scorer.predictors.base import FloatArray

if TYPE_CHECKING:
    import torch

__all__ = ["RouteMoAPredictor", "contrast_masks"]

TEMPERATURE = 0.2
"""Temperature of both contrastive losses (fixed a priori)."""
CLUSTERS = 8
"""k-means clusters for the sample-sample loss (fixed a priori)."""
SAMPLE_SAMPLE_WEIGHT = 1.0
"""Weight of the sample-sample loss against the sample-LLM loss, as in RouterDC."""


def contrast_masks(scores: FloatArray) -> tuple[np.ndarray, np.ndarray]:
    """Return (positives, negatives), bool [n, M]: each query's top and bottom third of models by score.

    Ties go with their group; a query whose known scores are all equal has neither; missing lines are
    neither.
    """
    known = np.isfinite(scores)
    n, m = scores.shape
    k = max(1, round(m / 3))
    pos = np.zeros((n, m), dtype=bool)
    neg = np.zeros((n, m), dtype=bool)
    for i in range(n):
        row = scores[i, known[i]]
        if row.size < 2 or row.min() == row.max():
            continue
        ordered = np.sort(row)
        top = ordered[-min(k, row.size)]
        bottom = ordered[min(k, row.size) - 1]
        pos[i] = known[i] & (scores[i] >= top) & (scores[i] > row.min())
        neg[i] = known[i] & (scores[i] <= bottom) & (scores[i] < row.max()) & ~pos[i]
    return pos, neg


def _pair_contrast(logits: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Return the mean over (anchor, positive) pairs of -log(e^pos / (e^pos + sum over negatives e^neg))."""
    import torch

    neg_lse = torch.logsumexp(logits.masked_fill(~neg, -math.inf), dim=1, keepdim=True)
    per_pair = torch.nn.functional.softplus(neg_lse - logits)
    per_pair = per_pair.masked_fill(~pos | torch.isinf(neg_lse), 0.0)
    count = (pos & ~torch.isinf(neg_lse)).sum()
    return per_pair.sum() / count.clamp(min=1)


def _module(dim: int, hidden: int, n_models: int) -> torch.nn.Module:
    import torch
    from torch import nn

    class RouteMoANet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Sequential(
                nn.Linear(dim, 2 * hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * hidden, hidden)
            )
            self.model_emb = nn.Parameter(torch.randn(n_models, hidden) * 0.1)
            self.model_bias = nn.Parameter(torch.zeros(n_models))
            self.log_scale = nn.Parameter(torch.tensor(math.log(5.0)))

        def query(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.proj(x), dim=-1)

        def similarity(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
            return h @ nn.functional.normalize(emb, dim=-1).T

        def pair(self, h: torch.Tensor, emb: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return self.similarity(h, emb) * self.log_scale.exp() + bias

        def scores(self, out: torch.Tensor) -> torch.Tensor:
            return out.sigmoid()

    return RouteMoANet()


class RouteMoAPredictor(NeuralPredictor):
    """RouteMoA's lightweight scorer over frozen query embeddings.

    Args:
        config: Optimisation settings.
        encoder: Query encoder for `predict`.
        encoder_name: Name of the encoder to build when `encoder` is not given.
    """

    method = "routemoa"

    def _build(self, dim: int, n_models: int) -> torch.nn.Module:
        return _module(dim, self.config.hidden, n_models)

    def _prepare(self, embeddings: np.ndarray, scores: FloatArray, seed: int) -> dict[str, np.ndarray]:
        from sklearn.cluster import KMeans

        pos, neg = contrast_masks(scores)
        n_clusters = max(1, min(CLUSTERS, len(embeddings) // 5))
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
        clusters = km.fit_predict(embeddings).astype(np.int64)
        return {"pos": pos, "neg": neg, "cluster": clusters}

    def _pointwise_loss(self, out: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        bce = torch.nn.functional.binary_cross_entropy_with_logits(out, targets, reduction="none")
        return (bce * mask).sum() / mask.sum().clamp(min=1)

    def _extra_loss(
        self, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        import torch

        sims = self.module.similarity(h, self.module.model_emb) / TEMPERATURE
        sample_llm = _pair_contrast(sims, extra["pos"], extra["neg"])
        cluster = extra["cluster"]
        same = cluster[:, None] == cluster[None, :]
        eye = torch.eye(len(cluster), dtype=torch.bool)
        sample_sample = _pair_contrast(h @ h.T / TEMPERATURE, same & ~eye, ~same)
        return sample_llm + SAMPLE_SAMPLE_WEIGHT * sample_sample
