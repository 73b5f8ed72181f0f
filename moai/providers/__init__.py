"""The provider registry: how a model declared in a mix becomes a LangChain chat model."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from moai.errors import ProviderError
from moai.mix_instructions.schema import ModelSpec

__all__ = ["LOGPROB_PROVIDERS", "PROVIDERS", "ProviderError", "check_chat_model", "make_chat_model"]

LOGPROB_PROVIDERS = ("openai", "local")
"""Providers that return token log-probabilities when asked (for `read: [logprob]`)."""


def _openai(name: str, spec: ModelSpec, logprobs: bool = False) -> BaseChatModel:
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
        # Asked for only where a judge reads them: a server that cannot give them may refuse the request.
        **({"logprobs": True, "top_logprobs": 2} if logprobs else {}),
    )
    return model


def _local(name: str, spec: ModelSpec, logprobs: bool = False) -> BaseChatModel:
    from moai.providers.local import LocalChatModel

    return LocalChatModel(model=spec.model, max_tokens=spec.max_tokens, temperature=spec.temperature, logprobs=logprobs)


def _fake(name: str, spec: ModelSpec) -> BaseChatModel:
    from moai.providers.fake import ScriptedChatModel

    return ScriptedChatModel(
        replies=spec.replies or [f"{name}: {{query}}"], max_tokens=spec.max_tokens, delay_s=spec.delay_s
    )


def _replay(name: str, spec: ModelSpec) -> BaseChatModel:
    from moai.providers.replay import ReplayChatModel

    # make_chat_model has resolved the path against the mix file's folder.
    return ReplayChatModel(responses=Path(spec.responses or ""), model=spec.model)


# Each setting of a model, and the names LangChain integrations give it (field names or aliases), in
# the order tried: the first one a class takes is passed, so no integration gets a keyword it would
# forward, unknown, to its API.
_LANGCHAIN_SETTINGS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict", "max_new_tokens"),
    "timeout_s": ("timeout", "request_timeout", "default_request_timeout"),
    "base_url": ("base_url", "endpoint_url"),
    "api_key": ("api_key",),
    "retries": ("max_retries",),
    "stream_usage": ("stream_usage",),
}


def _langchain_class(name: str, spec: ModelSpec, mix_file: str | None = None) -> type[BaseChatModel]:
    """Return the LangChain class of a `langchain` model, or raise ProviderError naming the package to install."""
    where = f"{mix_file}: models.{name}" if mix_file else f"models.{name}"
    try:
        from langchain.chat_models.base import _BUILTIN_PROVIDERS
    except ImportError:
        raise ProviderError(
            f"{where}: provider 'langchain' needs the package langchain: pip install 'mixture-of-ai[langchain]'"
        ) from None
    prefix = spec.model.partition(":")[0]
    if prefix not in _BUILTIN_PROVIDERS:  # the schema layer refuses it; a MixSpec built in code may not have been
        raise ProviderError(f"{where}: '{prefix}' is not a provider init_chat_model knows")
    module, class_name, _ = _BUILTIN_PROVIDERS[prefix]
    # ollama's chat model also lives, older, in langchain-community, where init_chat_model looks too.
    modules = [module, "langchain_community.chat_models"] if prefix == "ollama" else [module]
    for candidate in modules:
        if importlib.util.find_spec(candidate.partition(".")[0]) is not None:
            cls: type[BaseChatModel] = getattr(importlib.import_module(candidate), class_name)
            return cls
    package = module.partition(".")[0].replace("_", "-")
    raise ProviderError(f"{where}: provider '{prefix}' needs the package {package}: pip install {package}")


def _accepted(cls: type[BaseChatModel]) -> set[str]:
    names = set()
    for field, info in cls.model_fields.items():
        names |= {field, *(a for a in (info.alias, info.validation_alias) if isinstance(a, str))}
    return names


def _langchain(name: str, spec: ModelSpec) -> BaseChatModel:
    from langchain.chat_models import init_chat_model

    cls = _langchain_class(name, spec)
    key = spec.api_key
    if key is not None and key.startswith("${"):
        raise ProviderError(f"models.{name}: api_key {key} refers to an environment variable that is not set")
    # Retries are the runtime's (with backoff, per attempt timeout), so the integration's own are off.
    values = {
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        "timeout_s": spec.timeout_s,
        "base_url": spec.base_url,
        "api_key": key,
        "retries": 0,
        "stream_usage": True,  # a streamed call's tokens count against the budget as a plain call's do
    }
    accepted = _accepted(cls)
    kwargs: dict[str, Any] = {}
    for setting, value in values.items():
        if value is None:
            continue
        keyword = next((k for k in _LANGCHAIN_SETTINGS[setting] if k in accepted), None)
        if keyword is not None:
            kwargs[keyword] = value
        elif setting in ("base_url", "api_key", "max_tokens"):
            # Dropping these would send the query elsewhere, with other credentials, or past the budget's bound.
            raise ProviderError(f"models.{name}: {cls.__name__} takes no {setting} setting: remove it from the model")
    model: BaseChatModel = init_chat_model(spec.model, **kwargs)
    return model


PROVIDERS: dict[str, Callable[[str, ModelSpec], BaseChatModel]] = {
    "openai": _openai,
    "langchain": _langchain,
    "local": _local,
    "fake": _fake,
    "replay": _replay,
}


def make_chat_model(
    name: str, spec: ModelSpec, mix_file: str | None = None, *, logprobs: bool = False
) -> BaseChatModel:
    """Build the chat model for a model of a mix, by its provider.

    Args:
        name: The model's name in the mix.
        spec: Its declaration.
        mix_file: The mix file, which a replay model's responses file is relative to.
        logprobs: Ask for the replies' token log-probabilities (in `response_metadata["logprobs"]`), where
            the provider gives them (`LOGPROB_PROVIDERS`); the others ignore it.
    """
    if spec.provider == "replay" and spec.responses is not None:
        from moai.scorer.data.responses import resolve_responses

        spec = spec.model_copy(update={"responses": str(resolve_responses(spec.responses, mix_file))})
    if logprobs and spec.provider == "openai":
        return _openai(name, spec, logprobs=True)
    if logprobs and spec.provider == "local":
        return _local(name, spec, logprobs=True)
    return PROVIDERS[spec.provider](name, spec)


def check_chat_model(name: str, spec: ModelSpec, mix_file: str | None = None) -> None:
    """Raise ProviderError if a model cannot be built for want of a package, before any query needs it.

    Args:
        name: The model's name in the mix.
        spec: Its declaration.
        mix_file: The mix file, named in the message.
    """
    if spec.provider == "langchain":
        _langchain_class(name, spec, mix_file)
