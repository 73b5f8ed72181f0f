"""Run-time knobs of a mix, passed per call as LangGraph's context."""

from __future__ import annotations

from dataclasses import dataclass, field

from langgraph.config import get_config

__all__ = ["MixContext", "caller"]


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


def caller(context: MixContext | None) -> tuple[str | None, str | None]:
    """Return the thread and user of the run under way (call inside a node).

    The thread is LangGraph's `configurable.thread_id`; the user is the context's `user_id`, else
    `configurable.user_id`.
    """
    configurable = get_config().get("configurable", {})
    user = context.user_id if context is not None and context.user_id else configurable.get("user_id")
    return configurable.get("thread_id"), user
