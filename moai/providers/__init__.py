"""The provider registry: how a model declared in a mix becomes a LangChain chat model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from moai.mix_instructions.schema import ModelSpec

__all__ = ["PROVIDERS", "ProviderError", "make_chat_model"]


class ProviderError(RuntimeError):
    """A model that cannot be built as declared (missing key, missing package)."""


def _openai(name: str, spec: ModelSpec) -> BaseChatModel:
    import httpx
    from langchain_openai import ChatOpenAI

    key = spec.api_key
    if key is not None and key.startswith("${"):
        raise ProviderError(f"model '{name}': api_key {key} refers to an environment variable that is not set")
    model: BaseChatModel = ChatOpenAI(
        model=spec.model,
        base_url=spec.base_url,
        # A self-hosted OpenAI-compatible server usually wants no key, but the client insists on one.
        api_key=key or ("not-needed" if spec.base_url else None),
        max_completion_tokens=spec.max_tokens,
        temperature=spec.temperature,
        timeout=spec.timeout_s,
        max_retries=0,
        stream_usage=True,
        # Its own async client: langchain-openai's default one is shared by the whole process, so a
        # connection opened in one event loop would be reused, broken, from the next.
        http_async_client=httpx.AsyncClient(timeout=spec.timeout_s),
    )
    return model


def _local(name: str, spec: ModelSpec) -> BaseChatModel:
    from moai.providers.local import LocalChatModel

    return LocalChatModel(model=spec.model, max_tokens=spec.max_tokens, temperature=spec.temperature)


def _fake(name: str, spec: ModelSpec) -> BaseChatModel:
    from moai.providers.fake import ScriptedChatModel

    return ScriptedChatModel(
        replies=spec.replies or [f"{name}: {{query}}"], max_tokens=spec.max_tokens, delay_s=spec.delay_s
    )


def _replay(name: str, spec: ModelSpec) -> BaseChatModel:
    from moai.providers.replay import ReplayChatModel

    # make_chat_model has resolved the path against the mix file's folder.
    return ReplayChatModel(responses=Path(spec.responses or ""), model=spec.model)


PROVIDERS: dict[str, Callable[[str, ModelSpec], BaseChatModel]] = {
    "openai": _openai,
    "local": _local,
    "fake": _fake,
    "replay": _replay,
}


def make_chat_model(name: str, spec: ModelSpec, mix_file: str | None = None) -> BaseChatModel:
    """Build the chat model for a model of a mix, by its provider.

    Args:
        name: The model's name in the mix.
        spec: Its declaration.
        mix_file: The mix file, which a replay model's responses file is relative to.
    """
    if spec.provider == "replay" and spec.responses is not None:
        from moai.scorer.data.responses import resolve_responses

        spec = spec.model_copy(update={"responses": str(resolve_responses(spec.responses, mix_file))})
    return PROVIDERS[spec.provider](name, spec)
