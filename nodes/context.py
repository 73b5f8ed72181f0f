"""Run-time knobs of a mix, passed per call as LangGraph's context."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from langgraph.config import get_config

from moai.mix_instructions.schema import MAX_MODELS
from moai.nodes.tools import Offer, check_offer

__all__ = ["MixContext", "caller", "caller_key"]


@dataclass(kw_only=True)
class MixContext:
    """Settings a caller may change per run without editing the mix."""

    budget_usd: float | None = field(
        default=None, metadata={"description": "Most US dollars this query may spend; overrides the mix's budget."}
    )
    top_k: int | None = field(
        default=None, metadata={"description": "How many models the gate selects; overrides the mix's top_k."}
    )
    run_id: str | None = field(
        default=None,
        metadata={"description": "Id of this run in the usage monitor (feedback joins on it); default: a new UUID."},
    )
    user_id: str | None = field(
        default=None, metadata={"description": "Who asks: recorded with the run, and what an A/B split may key on."}
    )
    key_id: str | None = field(
        default=None,
        metadata={"description": "The id of the server key the request came with: recorded in every usage row."},
    )
    tools: list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "description": "Tools the answering model may call, in OpenAI's shape ({type: function, function: "
            "{name, description, parameters}}); its tool calls come back in the output's tool_calls."
        },
    )
    tool_choice: str | dict[str, Any] | None = field(
        default=None,
        metadata={"description": "auto (default), none, required, or {type: function, function: {name}}."},
    )
    response_format: dict[str, Any] | None = field(
        default=None,
        metadata={"description": "{type: json_object} or {type: json_schema, json_schema: {name, schema, strict}}."},
    )
    resume: str | None = field(
        default=None,
        metadata={
            "description": "The model that made the tool calls whose results this turn carries (the input's "
            "turn): the turn goes to it directly, without the gate and the proposers."
        },
    )

    def __post_init__(self) -> None:
        """Refuse a value the mix file could not hold, so no caller can switch the budget off by a NaN.

        Raises:
            ValueError: `budget_usd` is not a finite number >= 0, `top_k` not an integer from 1 to
                `MAX_MODELS` (a `top_k` above the mix's candidates picks them all), or the tools, tool
                choice or response format are malformed or too large (see `moai.nodes.tools`).
        """
        budget = self.budget_usd
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) or budget < 0
        ):
            raise ValueError(f"MixContext.budget_usd must be a finite number >= 0 or None, got {budget!r}")
        top_k = self.top_k
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_MODELS
        ):
            raise ValueError(f"MixContext.top_k must be an integer from 1 to {MAX_MODELS} or None, got {top_k!r}")
        try:
            self._offer = check_offer(self.tools, self.tool_choice, self.response_format)
        except ValueError as err:
            raise ValueError(f"MixContext.{err}") from None
        if self.resume is not None and (not isinstance(self.resume, str) or not 0 < len(self.resume) <= 200):
            raise ValueError(f"MixContext.resume must be a model's name or None, got {str(self.resume)[:64]!r}")

    @property
    def offer(self) -> Offer:
        """Return the tools, tool choice and response format, validated, for the answering call."""
        return self._offer


def caller(context: MixContext | None) -> tuple[str | None, str | None]:
    """Return the thread and user of the run under way (call inside a node).

    The thread is LangGraph's `configurable.thread_id`; the user is the context's `user_id`, else
    `configurable.user_id`.
    """
    configurable = get_config().get("configurable", {})
    user = context.user_id if context is not None and context.user_id else configurable.get("user_id")
    return configurable.get("thread_id"), user


def caller_key(context: MixContext | None) -> str | None:
    """Return the id of the key the run under way came with (call inside a node): the context's `key_id`,
    else `configurable.key_id`; None for a run that came with no key.
    """
    if context is not None and context.key_id:
        return context.key_id
    key = get_config().get("configurable", {}).get("key_id")
    return str(key) if key else None
