"""Scorers predict, before any model runs, how well each model will answer; the selector chooses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from moai.scorer.predictors.priors import PriorScorer
from moai.scorer.select import excluded, is_sensitive, rank

__all__ = ["Predictor", "PriorScorer", "excluded", "is_sensitive", "rank"]


class Predictor(Protocol):
    """What every performance predictor offers."""

    def predict(self, queries: Sequence[str], models: Sequence[str]) -> list[list[float]]:
        """Return one row of scores in [0, 1] per query, one column per model."""
        ...
