"""Where a mix's `gate.scorer` points: declared priors, the models' descriptions, a shipped checkpoint, or your own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moai.errors import MixError
from moai.mix_instructions.schema import MixSpec
from moai.scorer.checkpoint import METADATA

if TYPE_CHECKING:
    from moai.scorer import Predictor
    from moai.scorer.predictors.descriptions import Description

__all__ = [
    "BUNDLED",
    "DESCRIPTIONS",
    "bundled_checkpoints",
    "check_scorer",
    "described_models",
    "load_scorer",
    "missing_models",
    "resolve_checkpoint",
]

DESCRIPTIONS = "descriptions"
"""The `gate.scorer` that routes from each model's description, examples and avoid list, untrained."""

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
        choices = ", ".join(
            ["priors", DESCRIPTIONS, *(f"bundled:{name}" for name in bundled_checkpoints()), "a checkpoint folder"]
        )
        raise ValueError(f"no scorer checkpoint {ref!r} (no {METADATA} in {path}); valid choices: {choices}")
    return path


def described_models(spec: MixSpec) -> dict[str, Description]:
    """Return the declaration of each model of the pool that has a description or examples, by name."""
    from moai.scorer.predictors.descriptions import Description

    return {
        name: Description(m.description, tuple(m.examples), tuple(m.avoid), m.quality)
        for name, m in spec.models.items()
        if m.description.strip() or m.examples
    }


def load_scorer(
    ref: str,
    quality: Mapping[str, float],
    mix_file: str | None = None,
    descriptions: Mapping[str, Description] | None = None,
    describe_weight: float = 0.0,
) -> Predictor:
    """Return the predictor a mix names: 'priors', 'descriptions' or a checkpoint.

    Args:
        ref: `gate.scorer`.
        quality: Each model's declared quality (the priors).
        mix_file: The mix file, which a checkpoint path is relative to.
        descriptions: The described models (`described_models`): what 'descriptions' scores, and what a
            checkpoint is blended with.
        describe_weight: `gate.describe_weight`: weight of the descriptions in a checkpoint's blend.
    """
    from moai.scorer.predictors.priors import PriorScorer

    if ref == "priors":
        return PriorScorer(quality)
    from moai.scorer.predictors.descriptions import BlendedScorer, DescriptionScorer

    if ref == DESCRIPTIONS:
        return DescriptionScorer(descriptions)
    from moai.scorer.checkpoint import load

    checkpoint = load(resolve_checkpoint(ref, mix_file))
    if descriptions and (describe_weight > 0 or any(m not in checkpoint.models for m in descriptions)):
        return BlendedScorer(checkpoint, DescriptionScorer(descriptions), describe_weight, quality)
    return checkpoint


def missing_models(path: Path, models: Sequence[str]) -> list[str]:
    """Return the models of `models` the checkpoint at `path` cannot score."""
    from moai.scorer.checkpoint import read_metadata

    known = set(read_metadata(path)["models"])
    return [m for m in models if m not in known]


def check_scorer(spec: MixSpec, source: str = "<mix>") -> None:
    """Raise MixError if the mix's `gate.scorer` cannot score all its candidates.

    'descriptions' needs a description or examples on every candidate; a checkpoint must know every
    candidate it is to score, except one with a description (scored from it alone).
    """
    candidates = spec.gate.candidates if spec.gate.candidates is not None else list(spec.models)
    described = {name for name, m in spec.models.items() if m.description.strip() or m.examples}
    if spec.gate.scorer in ("priors", DESCRIPTIONS) and spec.gate.describe_weight > 0:
        raise MixError(
            source,
            "gate.describe_weight",
            f"blends a checkpoint with the descriptions; gate.scorer {spec.gate.scorer!r} is no checkpoint "
            "(leave describe_weight out, or name a checkpoint: bundled:<name> or a folder)",
        )
    if spec.gate.scorer == "priors":
        return
    if spec.gate.scorer == DESCRIPTIONS:
        if bare := [m for m in candidates if m not in described]:
            raise MixError(
                source,
                f"models.{bare[0]}.description",
                f"gate.scorer 'descriptions' needs a description or examples on every candidate; "
                f"{', '.join(bare)} {'declares' if len(bare) == 1 else 'declare'} neither",
            )
        return
    try:
        checkpoint = resolve_checkpoint(spec.gate.scorer, source)
    except ValueError as err:
        raise MixError(source, "gate.scorer", str(err)) from None
    if unknown := [m for m in missing_models(checkpoint, candidates) if m not in described]:
        raise MixError(
            source,
            "gate.scorer",
            f"the checkpoint cannot score {', '.join(unknown)}: add them with `moai scorer add-model`, "
            "give them a description or examples (scored from those alone), "
            "or leave them out of gate.candidates",
        )
