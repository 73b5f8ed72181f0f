"""Text encoders for the predictors: sentence-transformers models and the static token-table encoder.

`encoder_from_name` rebuilds the encoder a checkpoint names; `make_encoder` the one a user names.
"""

from __future__ import annotations

from typing import Literal

from moai.scorer.encoders.sentence import DEFAULT_ENCODER, SentenceEncoder, TextEncoder, cached_encode
from moai.scorer.encoders.static import STATIC_ENCODER, StaticEncoder, is_static_name

__all__ = [
    "DEFAULT_ENCODER",
    "STATIC_ENCODER",
    "SentenceEncoder",
    "StaticEncoder",
    "TextEncoder",
    "cached_encode",
    "encoder_from_name",
    "make_encoder",
]


def encoder_from_name(name: str) -> SentenceEncoder | StaticEncoder:
    """Rebuild an encoder from its `name` (as stored in checkpoints).

    `static-minilm` and `static:<folder>|dim=<n>` give a `StaticEncoder`; any other name a `SentenceEncoder`
    (`<model>|truncate=<left|right>`, or a bare model name or folder, truncating left).
    """
    if is_static_name(name):
        return StaticEncoder.from_name(name)
    model, _, option = name.partition("|truncate=")
    side = option or "left"
    if side not in ("left", "right"):
        raise ValueError(f"unknown truncation {side!r} in encoder name {name!r}; valid: left, right")
    return SentenceEncoder(model, truncate="left" if side == "left" else "right")


def make_encoder(
    model: str = DEFAULT_ENCODER,
    *,
    truncate: Literal["left", "right"] = "left",
    threads: int | None = None,
) -> SentenceEncoder | StaticEncoder:
    """Return the encoder a user names (`--encoder`): a static one for a static name, else a model's.

    Args:
        model: `DEFAULT_ENCODER`, a sentence-transformers folder or cached name, `static-minilm`, or
            `static:<folder>|dim=<n>`.
        truncate: Which end of a long text a sentence-transformers model drops (a static encoder keeps
            every token and ignores it).
        threads: Torch CPU threads of a sentence-transformers model.
    """
    if is_static_name(model):
        return StaticEncoder.from_name(model)
    return SentenceEncoder(model, truncate=truncate, threads=threads)
