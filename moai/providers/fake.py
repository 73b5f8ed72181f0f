"""A scripted chat model: the `fake` provider, for tests, demos of the graph, and benchmarks of overhead."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr

__all__ = ["FAIL", "UNAVAILABLE", "ScriptedChatModel"]

FAIL = "!fail"
"""A reply that starts with this raises RuntimeError instead of answering, to script a failing model."""
UNAVAILABLE = "!unavailable"
"""A reply that starts with this raises ConnectionError, a transient failure worth a retry."""


class ScriptedChatModel(BaseChatModel):
    """Reply with scripted texts in turn; count tokens as whitespace-separated words.

    A reply may use `{query}` (the last message's text). A reply starting with `FAIL` raises
    `RuntimeError`, one starting with `UNAVAILABLE` raises `ConnectionError`, with the rest as message.
    """

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

    def model_post_init(self, context: Any, /) -> None:
        self._turn = itertools.count()

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            turn = next(self._turn)
            text = self.replies[turn % len(self.replies)]
        if text.startswith(FAIL):
            raise RuntimeError(text[len(FAIL) :].strip() or "scripted failure")
        if text.startswith(UNAVAILABLE):
            raise ConnectionError(text[len(UNAVAILABLE) :].strip() or "scripted outage")
        query = messages[-1].text if messages else ""
        text = text.replace("{query}", query)
        if self.max_tokens is not None and len(words := list(re.finditer(r"\S+", text))) > self.max_tokens:
            text = text[: words[self.max_tokens - 1].end()]
        tokens_in = sum(len(m.text.split()) for m in messages)
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
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = self._reply(messages)
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
