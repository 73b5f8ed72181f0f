"""A scripted chat model: the `fake` provider, for tests, demos of the graph, and benchmarks of overhead."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCall
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

__all__ = ["FAIL", "TOOL", "UNAVAILABLE", "ScriptedChatModel"]

FAIL = "!fail"
"""A reply that starts with this raises RuntimeError instead of answering, to script a failing model."""
UNAVAILABLE = "!unavailable"
"""A reply that starts with this raises ConnectionError, a transient failure worth a retry."""
TOOL = "!tool"
"""A reply that starts with this calls tools: the rest is JSON, one call `{"name": ..., "args": {...}}` or a
list of them. The model must have been offered tools (`bind_tools`), as a real one must."""


_BOUND: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bound", default={})  # noqa: B039
"""The tools, tool choice and response format bound to the call under way (read, never changed)."""


class ScriptedChatModel(BaseChatModel):
    """Reply with scripted texts in turn; count tokens as whitespace-separated words.

    A reply may use `{query}` (the last message's text). A reply starting with `FAIL` raises
    `RuntimeError`, one starting with `UNAVAILABLE` raises `ConnectionError`, with the rest as message;
    one starting with `TOOL` calls tools. `sent` keeps what each call was sent: its messages, and the
    tools, tool choice and response format bound to it.
    """

    accepts_response_format: ClassVar[bool] = True
    """Takes OpenAI's `response_format` (and ignores it: the script says what it answers)."""

    replies: Sequence[str] = Field(default_factory=lambda: ["ok"])
    delay_s: float = 0.0
    max_tokens: int | None = None
    """Cut replies to this many words, as a real model stops at its token limit."""
    logprobs: Sequence[float] | None = None
    """The log-probability of every token of each reply in turn (cycled as `replies` are), returned in
    `response_metadata["logprobs"]` in OpenAI's shape, with one runner-up holding the rest of the mass;
    None: no log-probabilities, as most providers give none."""
    _turn: Iterator[int] = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sent: list[tuple[list[BaseMessage], dict[str, Any]]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        self._turn = itertools.count()

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def sent(self) -> list[tuple[list[BaseMessage], dict[str, Any]]]:
        """Return each call's messages and its bound `tools`, `tool_choice` and `response_format`."""
        with self._lock:
            return list(self._sent)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer tools, as `ChatOpenAI.bind_tools` does (OpenAI's shape; `any` is `required`)."""
        choice = "required" if tool_choice == "any" else tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=choice, **kwargs)

    def _replying(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        """Reply to one call with what was bound to it in view (`_reply`, which tests override, takes none)."""
        bound = {k: v for k, v in kwargs.items() if k in ("tools", "tool_choice", "response_format")}
        token = _BOUND.set(bound)
        try:
            return self._reply(messages)
        finally:
            _BOUND.reset(token)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        bound = _BOUND.get()
        with self._lock:
            turn = next(self._turn)
            text = self.replies[turn % len(self.replies)]
            self._sent.append((list(messages), bound))
        tokens_in = sum(len(m.text.split()) for m in messages)
        if text.startswith(TOOL):
            if not bound.get("tools"):
                raise RuntimeError("scripted tool call, but the model was offered no tools")
            calls = json.loads(text[len(TOOL) :])
            calls = calls if isinstance(calls, list) else [calls]
            tool_calls = [
                ToolCall(name=c["name"], args=c.get("args", {}), id=c.get("id", f"call_{i}"), type="tool_call")
                for i, c in enumerate(calls)
            ]
            out = len(text.split())
            usage = UsageMetadata(input_tokens=tokens_in, output_tokens=out, total_tokens=tokens_in + out)
            return AIMessage(content="", tool_calls=tool_calls, usage_metadata=usage)
        if text.startswith(FAIL):
            raise RuntimeError(text[len(FAIL) :].strip() or "scripted failure")
        if text.startswith(UNAVAILABLE):
            raise ConnectionError(text[len(UNAVAILABLE) :].strip() or "scripted outage")
        query = messages[-1].text if messages else ""
        text = text.replace("{query}", query)
        if self.max_tokens is not None and len(words := list(re.finditer(r"\S+", text))) > self.max_tokens:
            text = text[: words[self.max_tokens - 1].end()]
        usage = UsageMetadata(
            input_tokens=tokens_in, output_tokens=len(text.split()), total_tokens=tokens_in + len(text.split())
        )
        meta = {} if not self.logprobs else {"logprobs": _logprobs(text, self.logprobs[turn % len(self.logprobs)])}
        return AIMessage(content=text, usage_metadata=usage, response_metadata=meta)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._replying(messages, kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._replying(messages, kwargs))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = self._replying(messages, kwargs)
        if message.tool_calls:
            chunks = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(message.tool_calls)
            ]
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", tool_call_chunks=chunks, usage_metadata=message.usage_metadata)
            )
            return
        words = message.text.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            chunk = AIMessageChunk(
                content=word if last else word + " ",
                usage_metadata=message.usage_metadata if last else None,
                response_metadata=message.response_metadata if last else {},
            )
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)


def _logprobs(text: str, logprob: float) -> dict[str, Any]:
    """Return OpenAI-shaped log-probabilities: each word at `logprob`, a runner-up with the rest of the mass."""
    rest = math.log(max(1e-12, 1 - math.exp(min(0.0, logprob))))
    return {
        "content": [
            {
                "token": word,
                "logprob": logprob,
                "top_logprobs": [{"token": word, "logprob": logprob}, {"token": "\x00other", "logprob": rest}],
            }
            for word in text.split()
        ]
    }
