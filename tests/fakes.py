"""Fake pools for tests: a mix's models swapped for scripted ones, everything else as written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mix_instructions import MixSpec, load_spec


def with_fake_models(spec: MixSpec, replies: Mapping[str, Sequence[str]]) -> MixSpec:
    """Return `spec` with each model's provider set to 'fake', replying with `replies[name]` in turn."""
    models = {
        name: model.model_copy(update={"provider": "fake", "replies": list(replies.get(name, [f"{name}: {{query}}"]))})
        for name, model in spec.models.items()
    }
    return spec.model_copy(update={"models": models})


def fake_bundled(name: str, replies: Mapping[str, Sequence[str]]) -> MixSpec:
    """Return a bundled mix whose models reply with scripted texts."""
    return with_fake_models(load_spec(name), replies)
