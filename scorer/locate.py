"""Where a mix's `gate.scorer` points: declared priors, a checkpoint shipped with moai, or your own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moai.errors import MixError
from moai.mix_instructions.schema import MixSpec
from moai.scorer.checkpoint import METADATA

if TYPE_CHECKING:
    from moai.scorer import Predictor

__all__ = ["BUNDLED", "bundled_checkpoints", "check_scorer", "load_scorer", "missing_models", "resolve_checkpoint"]

BUNDLED = Path(__file__).parent / "bundled"
"""Checkpoints shipped with the package, named `bundled:<folder>` in a mix."""


def bundled_checkpoints() -> list[str]:
    """Return the names of the shipped checkpoints."""
    return sorted(p.name for p in BUNDLED.iterdir() if (p / METADATA).is_file())


def resolve_checkpoint(ref: str, mix_file: str | None = None) -> Path:
    """Return the checkpoint folder of `bundled:<name>` or of a path (relative to the mix file's folder).

    Raises:
        ValueError: No such checkpoint; the message lists the valid choices.
    """
    if ref.startswith("bundled:"):
        path = BUNDLED / ref.removeprefix("bundled:")
    else:
        path = Path(ref)
        if not path.is_absolute() and mix_file and Path(mix_file).is_file():
            path = Path(mix_file).parent / path
    if not (path / METADATA).is_file():
        choices = ", ".join(["priors", *(f"bundled:{name}" for name in bundled_checkpoints()), "a checkpoint folder"])
        raise ValueError(f"no scorer checkpoint {ref!r} (no {METADATA} in {path}); valid choices: {choices}")
    return path


def load_scorer(ref: str, quality: Mapping[str, float], mix_file: str | None = None) -> Predictor:
    """Return the predictor a mix names: 'priors' (the declared `quality` of each model) or a checkpoint."""
    from moai.scorer.predictors.priors import PriorScorer

    if ref == "priors":
        return PriorScorer(quality)
    from moai.scorer.checkpoint import load

    return load(resolve_checkpoint(ref, mix_file))


def missing_models(path: Path, models: Sequence[str]) -> list[str]:
    """Return the models of `models` the checkpoint at `path` cannot score."""
    from moai.scorer.checkpoint import read_metadata

    known = set(read_metadata(path)["models"])
    return [m for m in models if m not in known]


def check_scorer(spec: MixSpec, source: str = "<mix>") -> None:
    """Raise MixError if the mix's `gate.scorer` names no checkpoint, or one that cannot score its candidates."""
    if spec.gate.scorer == "priors":
        return
    try:
        checkpoint = resolve_checkpoint(spec.gate.scorer, source)
    except ValueError as err:
        raise MixError(source, "gate.scorer", str(err)) from None
    candidates = spec.gate.candidates if spec.gate.candidates is not None else list(spec.models)
    if unknown := missing_models(checkpoint, candidates):
        raise MixError(
            source,
            "gate.scorer",
            f"the checkpoint cannot score {', '.join(unknown)}: add them with `moai scorer add-model` "
            "or leave them out of gate.candidates",
        )
