"""The prior predictor: each model's declared quality, the same for every query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["PriorScorer"]


class PriorScorer:
    """Score each model by the quality prior its mix declares, until a learned scorer replaces it."""

    def __init__(self, quality: Mapping[str, float]) -> None:
        self.quality = dict(quality)

    def predict(self, queries: Sequence[str], models: Sequence[str]) -> list[list[float]]:
        """Return one row of scores in [0, 1] per query, one column per model."""
        row = [self.quality[m] for m in models]
        return [list(row) for _ in queries]
