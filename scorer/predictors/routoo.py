"""Routoo's performance predictor: ``s = Linear(Enc(q) - Emb(m))`` over K quality levels.

Routoo (Mohammadshahi et al., 2024) scores a (query, model) pair by the difference of the query's
encoding and a learned model embedding, projected to K quality levels and trained with cross-entropy; the
predicted score is the expected level / (K - 1). Soft scores are bucketed onto the K levels by splitting
their mass between the two nearest levels (0.3 with K = 2 is 70% level 0, 30% level 1), so the expected
level stays the true score.

Two changes, because the encoder here is frozen (its embeddings precomputed) instead of fine-tuned:
a trainable projection P stands in for the fine-tuning, and a GELU sits between the difference and the
linear head. Without a nonlinearity, ``Linear(h_q - h_m) = W h_q - W h_m + b`` is additive in query and
model: with K = 2 every query would rank the models in the same order, so no per-query routing. The
predictor is therefore ``softmax(Linear(GELU(P Enc(q) - Emb(m))))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from moai.scorer.predictors._neural import NeuralPredictor, TrainConfig
from moai.scorer.predictors.base import FloatArray

if TYPE_CHECKING:
    import torch

__all__ = ["RoutooPredictor", "level_targets", "levels_for"]

SOFT_LEVELS = 5
"""K for soft (non-binary) scores, fixed a priori; binary scores use K = 2 as in the paper."""


def levels_for(scores: FloatArray) -> int:
    """Return K: 2 when every known score is 0 or 1, else `SOFT_LEVELS`."""
    known = scores[np.isfinite(scores)]
    return 2 if np.isin(known, (0.0, 1.0)).all() else SOFT_LEVELS


def level_targets(scores: torch.Tensor, levels: int) -> torch.Tensor:
    """Return [..., K] target distributions: each score's mass split between its two nearest levels."""
    import torch

    pos = scores.clamp(0, 1) * (levels - 1)
    lo = pos.floor().clamp(max=levels - 1)
    hi = (lo + 1).clamp(max=levels - 1)
    frac = pos - lo
    target = torch.zeros(*scores.shape, levels, dtype=scores.dtype)
    target.scatter_add_(-1, lo.long().unsqueeze(-1), (1 - frac).unsqueeze(-1))
    target.scatter_add_(-1, hi.long().unsqueeze(-1), frac.unsqueeze(-1))
    return target


def _module(dim: int, hidden: int, n_models: int, levels: int) -> torch.nn.Module:
    import torch
    from torch import nn

    class RoutooNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(dim, hidden)
            self.drop = nn.Dropout(0.1)
            self.model_emb = nn.Parameter(torch.randn(n_models, hidden) * 0.1)
            self.model_bias = nn.Parameter(torch.zeros(n_models), requires_grad=False)
            self.head = nn.Linear(hidden, levels)
            self.register_buffer("level_values", torch.arange(levels, dtype=torch.float32) / (levels - 1))

        def query(self, x: torch.Tensor) -> torch.Tensor:
            h: torch.Tensor = self.drop(self.proj(x))
            return h

        def pair(self, h: torch.Tensor, emb: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            # Routoo has no per-model bias: `bias` is accepted (and ignored) to share the interface.
            logits: torch.Tensor = self.head(nn.functional.gelu(h[:, None, :] - emb[None, :, :]))
            return logits

        def scores(self, out: torch.Tensor) -> torch.Tensor:
            return (out.softmax(dim=-1) * self.get_buffer("level_values")).sum(dim=-1)

    return RoutooNet()


class RoutooPredictor(NeuralPredictor):
    """Routoo's K-level performance predictor over frozen query embeddings.

    Args:
        levels: K; None picks 2 for binary training scores, else `SOFT_LEVELS`.
        config: Optimisation settings.
        encoder: Query encoder for `predict`.
        encoder_name: Name of the encoder to build when `encoder` is not given.
    """

    method = "routoo"

    def __init__(self, levels: int | None = None, config: TrainConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if levels is not None and levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.levels_requested = levels
        self.levels = levels or 2

    def _setup(self, scores: FloatArray) -> None:
        self.levels = self.levels_requested or levels_for(scores)

    def _build(self, dim: int, n_models: int) -> torch.nn.Module:
        return _module(dim, self.config.hidden, n_models, self.levels)

    def _pointwise_loss(self, out: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = level_targets(targets, self.levels)
        nll = -(target * out.log_softmax(dim=-1)).sum(dim=-1)
        return (nll * mask).sum() / mask.sum().clamp(min=1)

    def _config(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def _configure(self, config: dict[str, Any]) -> None:
        self.levels = self.levels_requested = int(config["levels"])
