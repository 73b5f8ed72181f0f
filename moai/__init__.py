"""Mixture-of-AI: declarative mixes of LLMs, compiled into LangGraph graphs.

One namespace, in layers that import one way, lowest first: `moai.mix_instructions` (the mix-file
schema, pure data) <- `moai.scorer` (predictors and the selector, usable without any graph) <-
`moai.nodes` <- `moai.graphs` <- the surface (`moai.api`, `moai.cli`, `moai.chat_model`,
`moai.providers`, `moai.usage`). `moai.errors` imports nothing of the project: every layer may raise
its errors.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MixError", "MixRunError", "MixSpec", "MixtureChatModel", "build_mix", "load_mix"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import moai` (and the CLI's help) stays fast: the surface imports LangGraph.
    if name in ("build_mix", "load_mix"):
        from moai import api

        return getattr(api, name)
    if name in ("MixError", "MixRunError"):
        from moai import errors

        return getattr(errors, name)
    if name == "MixSpec":
        from moai.mix_instructions import MixSpec

        return MixSpec
    if name == "MixtureChatModel":
        from moai.chat_model import MixtureChatModel

        return MixtureChatModel
    raise AttributeError(f"module 'moai' has no attribute {name!r}")
