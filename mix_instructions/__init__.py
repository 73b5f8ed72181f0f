"""Mix instructions: the schema of a mix file, its loader and the bundled mixes."""

from __future__ import annotations

from moai.mix_instructions.load import bundled_mixes, json_schema, load_any, load_spec, resolve_path
from moai.mix_instructions.schema import MixSpec, SplitSpec

__all__ = [
    "MixSpec",
    "SplitSpec",
    "bundled_mixes",
    "json_schema",
    "load_any",
    "load_spec",
    "resolve_path",
]
