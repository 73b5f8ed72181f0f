"""Fake pools for tests: a mix's models swapped for scripted ones, everything else as written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from moai.mix_instructions import MixSpec, load_spec


def with_fake_models(spec: MixSpec, replies: Mapping[str, Sequence[str]]) -> MixSpec:
    """Return `spec` with each model's provider set to 'fake', replying with `replies[name]` in turn.

    The gate scores by the declared priors, so a test's expected path does not hang on what a shipped
    checkpoint learned (tests of the learned gate use the checkpoint on purpose).
    """
    models = {
        name: model.model_copy(update={"provider": "fake", "replies": list(replies.get(name, [f"{name}: {{query}}"]))})
        for name, model in spec.models.items()
    }
    gate = spec.gate.model_copy(update={"scorer": "priors"})
    return spec.model_copy(update={"models": models, "gate": gate})


def fake_bundled(name: str, replies: Mapping[str, Sequence[str]]) -> MixSpec:
    """Return a bundled mix whose models reply with scripted texts."""
    return with_fake_models(load_spec(name), replies)
