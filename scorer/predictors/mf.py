"""Matrix factorisation scorer, after RouteLLM (Ong et al., 2024).

RouteLLM's MF router scores a (query, model) pair as ``w^T (v_m * (W q + b))``: the query's embedding is
projected into the space of the learned model embeddings, multiplied element-wise with the model's
embedding, and read out by a linear layer. RouteLLM trains it on pairwise preferences of two models;
here it is trained pointwise, ``sigmoid(w^T (v_m * (W q + b)) + b_m)`` against each model's (soft) score
with binary cross-entropy, so it scores any number of models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moai.scorer.predictors._neural import NeuralPredictor

if TYPE_CHECKING:
    import torch

__all__ = ["MFPredictor"]


def _module(dim: int, hidden: int, n_models: int) -> torch.nn.Module:
    import torch
    from torch import nn

    class MFNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(dim, hidden)
            self.drop = nn.Dropout(0.1)
            self.model_emb = nn.Parameter(torch.randn(n_models, hidden) * 0.1 + 1.0 / hidden**0.5)
            self.model_bias = nn.Parameter(torch.zeros(n_models))
            self.readout = nn.Linear(hidden, 1, bias=False)

        def query(self, x: torch.Tensor) -> torch.Tensor:
            h: torch.Tensor = self.drop(self.proj(x))
            return h

        def pair(self, h: torch.Tensor, emb: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.readout(h[:, None, :] * emb[None, :, :])
            return out.squeeze(-1) + bias

        def scores(self, out: torch.Tensor) -> torch.Tensor:
            return out.sigmoid()

    return MFNet()


class MFPredictor(NeuralPredictor):
    """RouteLLM-style matrix factorisation over frozen query embeddings.

    Args:
        config: Optimisation settings.
        encoder: Query encoder for `predict`.
        encoder_name: Name of the encoder to build when `encoder` is not given.
    """

    method = "mf"

    def _build(self, dim: int, n_models: int) -> torch.nn.Module:
        return _module(dim, self.config.hidden, n_models)

    def _pointwise_loss(self, out: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        bce = torch.nn.functional.binary_cross_entropy_with_logits(out, targets, reduction="none")
        return (bce * mask).sum() / mask.sum().clamp(min=1)
