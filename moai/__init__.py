"""Mixture-of-AI: declarative mixes of LLMs, compiled into LangGraph graphs."""

from __future__ import annotations

from typing import Any

__all__ = ["MixError", "MixRunError", "MixSpec", "MixtureChatModel", "build_mix", "load_mix"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import moai` (and the CLI's help) stays fast and the node modules, which import
    # moai.providers, can be imported first without a cycle.
    if name in ("build_mix", "load_mix"):
        from moai import api

        return getattr(api, name)
    if name in ("MixError", "MixSpec"):
        import mix_instructions

        return getattr(mix_instructions, name)
    if name == "MixtureChatModel":
        from moai.chat_model import MixtureChatModel

        return MixtureChatModel
    if name == "MixRunError":
        from nodes._runtime import MixRunError

        return MixRunError
    raise AttributeError(f"module 'moai' has no attribute {name!r}")
