"""The `replay` provider: a model answers with what it was recorded answering, at the recorded cost.

The query is what `moai.nodes.prompts.query_of` finds in the messages: the last human message, less the
earlier answers, draft or critique that a later layer, an escalation or an aggregator is shown before it.
It is looked up, whitespace collapsed, among the prompts of the responses file, then, stripped, among its
ids (so `moai run MIX gsm8k-12` replays query gsm8k-12). System messages, earlier turns and the material
before the query change nothing: the reply is the model's recorded answer to the query alone (an
aggregator replays its own answer, not a synthesis). A judge's grading prompt, or a query the file does
not hold for the model, has no recorded answer: that call fails with `moai.errors.NoRecordedAnswer`, so
the model's fallbacks apply, as for any failed call; its circuit breaker does not count it (the model is
not down).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult

from moai.errors import NoRecordedAnswer
from moai.nodes.prompts import query_of
from moai.scorer.data.responses import Recorded, responses_index

__all__ = ["ReplayChatModel"]


class ReplayChatModel(BaseChatModel):
    """Answer with `model`'s recorded answers in the responses file at `responses`.

    The reply's `response_metadata` carries `cost_usd` (the recorded cost, which the call records instead
    of a price-based one), `usage_estimated` and `replay_id` (the id of the query it matched).
    """

    responses: Path
    model: str

    @property
    def _llm_type(self) -> str:
        return "replay"

    def recorded(self, messages: list[BaseMessage]) -> Recorded | None:
        """Return the recorded answer to these messages' query, or None."""
        query = query_of(messages)
        return None if query is None else responses_index(self.responses).find(self.model, query)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        found = self.recorded(messages)
        if found is None:
            query = query_of(messages)
            if query is None:
                raise NoRecordedAnswer(f"a replay model ({self.model}) has no recorded verdict: it cannot judge")
            shown = " ".join(query.split())
            shown = shown if len(shown) <= 80 else shown[:80] + "..."
            raise NoRecordedAnswer(
                f"{self.responses.name} holds no answer of {self.model} to {shown!r} "
                "(matched by the query's text, then as an id)"
            )
        usage = UsageMetadata(
            input_tokens=found.tokens_in,
            output_tokens=found.tokens_out,
            total_tokens=found.tokens_in + found.tokens_out,
        )
        metadata = {"cost_usd": found.cost_usd, "usage_estimated": found.estimated, "replay_id": found.id}
        return AIMessage(content=found.response, usage_metadata=usage, response_metadata=metadata)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])
