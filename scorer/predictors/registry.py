"""The allow-listed scorer methods, by name: nothing is imported from a path written in a file."""

from __future__ import annotations

from typing import Any

from moai.scorer.predictors.base import ScorePredictor

__all__ = ["BASELINES", "LEARNED", "METHODS", "ZERO_SHOT", "make", "predictor_class"]

LEARNED = ("routoo", "routemoa", "knn", "mf", "blend")
"""Methods that learn from routing data (and can be saved and grown with `add_model`)."""
BASELINES = ("best_single", "per_task", "random")
"""Reference methods the benchmark runs beside the learned ones (the oracle is reported on its own)."""
ZERO_SHOT = ("descriptions",)
"""Methods that use no routing data: they score from what each model declares (its description and examples)."""
METHODS = LEARNED + BASELINES + ZERO_SHOT


def predictor_class(method: str) -> type[ScorePredictor]:
    """Return the class of a method.

    Raises:
        ValueError: The method is unknown (the message lists the valid ones).
    """
    if method == "routoo":
        from moai.scorer.predictors.routoo import RoutooPredictor

        return RoutooPredictor
    if method == "routemoa":
        from moai.scorer.predictors.routemoa import RouteMoAPredictor

        return RouteMoAPredictor
    if method == "knn":
        from moai.scorer.predictors.knn import KnnPredictor

        return KnnPredictor
    if method == "mf":
        from moai.scorer.predictors.mf import MFPredictor

        return MFPredictor
    if method == "blend":
        from moai.scorer.predictors.blend import BlendPredictor

        return BlendPredictor
    if method == "descriptions":
        from moai.scorer.predictors.descriptions import DescriptionScorer

        return DescriptionScorer
    from moai.scorer.predictors import baselines

    classes: dict[str, type[ScorePredictor]] = {
        "best_single": baselines.BestSinglePredictor,
        "per_task": baselines.PerTaskPredictor,
        "random": baselines.RandomPredictor,
        "oracle": baselines.OraclePredictor,
    }
    if method not in classes:
        raise ValueError(f"unknown scorer method {method!r}; valid: {', '.join((*METHODS, 'oracle'))}")
    return classes[method]


def make(method: str, **kwargs: Any) -> ScorePredictor:
    """Return a new, untrained predictor of a method (keyword arguments go to its constructor)."""
    return predictor_class(method)(**kwargs)
