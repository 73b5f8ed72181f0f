"""The aggregator: synthesise the final answer from the latest proposals, or pass the best one through."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolCall
from langgraph.runtime import Runtime

from moai.nodes._dispatch import budget_of, remaining_budget
from moai.nodes.call import call_model
from moai.nodes.context import MixContext
from moai.nodes.prompts import aggregate_messages, propose_messages
from moai.nodes.runtime import MixRuntime, nothing_answered
from moai.nodes.state import Call, MixState, Proposal
from moai.nodes.tools import Offer, requires_call
from moai.scorer.privacy import stored_answer
from moai.scorer.select import call_cost

__all__ = ["best_proposal", "make_aggregate"]


def best_proposal(state: MixState, proposals: list[Proposal]) -> Proposal:
    """Return the proposal with the highest judged (else predicted) score; the latest wins ties."""
    judged = {(v["layer"], v["model"], v["step"]): v["score"] for v in state.get("verdicts", [])}

    def key(item: tuple[int, Proposal]) -> tuple[float, int, int]:
        i, p = item
        score = judged.get((p["layer"], p["model"], p["step"]), state["scores"].get(p["model"], 0.0))
        return score, p["layer"], -i

    return max(enumerate(proposals), key=key)[1]


def _top_model(state: MixState) -> str:
    """Return the best-scored model that no hard constraint rules out for this query."""
    allowed = [name for name in state["scores"] if name not in state["gate"]["excluded"]]
    return max(allowed, key=state["scores"].__getitem__)


def _finish_row(mix: MixRuntime, answer: str, used: list[str], calls: list[Call]) -> dict[str, Any]:
    """Describe how a run ended, and what the pool's dearest model would have cost instead.

    The baseline is one call to that model, as long as the run's first answer in and its last answer out.
    """
    dearest = max(mix.spec.models, key=lambda name: call_cost(mix.spec.models[name], 1000, 1000))
    ok = [c for c in calls if c["status"] == "ok"]
    baseline = call_cost(mix.spec.models[dearest], ok[0]["tokens_in"], ok[-1]["tokens_out"]) if ok else None
    return {
        "status": "ok",
        "answer": answer,
        "models_used": used,
        "cost_usd": sum(c["cost_usd"] for c in calls),
        "baseline_model": dearest,
        "baseline_cost_usd": baseline,
        "finished_ts": time.time(),
    }


def make_aggregate(mix: MixRuntime) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
    """Return the aggregate node.

    In a `synthesize` mix the aggregator gets the caller's tools and response format (the proposers
    answered in text), and is called even on a single proposal when there are any: it is the one that may
    call a tool. A turn that carries tool results (the context's `resume`) is answered here, by one call
    to the model that called the tools.
    """
    spec = mix.spec.aggregate

    async def aggregate(state: MixState, runtime: Runtime[MixContext]) -> dict[str, Any]:
        context = runtime.context or MixContext()
        offer = context.offer
        if context.resume is not None or state.get("turn"):
            # The gate sent a tool turn here, and kept the model that continues it.
            kept = state["kept"]
            assert kept is not None  # the gate keeps the model it sends a tool turn to
            return await _resumed(mix, state, kept, replace(offer, resuming=True), context)
        proposals = state.get("proposals", [])
        if not proposals:
            raise mix.fail(state["run"], nothing_answered(mix.spec.name, state.get("calls", [])))
        last_layer = max(p["layer"] for p in proposals)
        latest = [p for p in proposals if p["layer"] == last_layer]
        calls: list[Call] = []
        best = best_proposal(state, proposals if spec.mode == "best" else latest)
        answer, tool_calls = best["content"], list(best.get("tool_calls", []))
        answered_by: str | None = best["model"]
        trace = f"aggregate:{spec.mode}"
        if spec.mode == "synthesize" and (len(latest) > 1 or offer):
            model = spec.model if spec.model not in (None, "top1") else _top_model(state)
            assert model is not None  # the schema check requires an aggregator for 'synthesize'

            reply, by, calls = await call_model(
                mix,
                "aggregate",
                model,
                aggregate_messages(state["query"], [p["content"] for p in latest], state.get("history", [])),
                sensitive=state["sensitive"],
                allowance_usd=remaining_budget(budget_of(mix, runtime.context), state),
                run=state["run"],
                offer=offer,
            )
            if reply is not None:
                answer, tool_calls, answered_by = reply.text, list(reply.tool_calls), by
            elif offer.json is not None or requires_call(offer):
                # A proposer's prose is not the JSON, nor the tool call, the caller asked for.
                raise mix.fail(state["run"], nothing_answered(mix.spec.name, [*state.get("calls", []), *calls]))
            else:
                trace = "aggregate:best"  # the aggregator failed or was refused: the best answer stands
        elif spec.mode == "synthesize":
            trace = "aggregate:single"
        return _finish(mix, state, calls, answer, tool_calls, answered_by, trace)

    return aggregate


async def _resumed(mix: MixRuntime, state: MixState, model: str, offer: Offer, context: MixContext) -> dict[str, Any]:
    """Answer a turn that carries tool results with one call to the model that called the tools.

    Its fallbacks answer only if it fails, and only those that take tools (see `Offer.resuming`).
    """
    turn = list(state.get("turn", []))
    messages = [
        *propose_messages(
            state["query"],
            history=state.get("history", []),
            prompt="answer",
            instructions=None,
            references=[],
            critique=None,
            ask_confidence=False,
        ),
        *turn,
    ]
    reply, answered_by, calls = await call_model(
        mix,
        "aggregate",
        model,
        messages,
        sensitive=state["sensitive"],
        allowance_usd=remaining_budget(budget_of(mix, context), state),
        run=state["run"],
        answers=True,
        offer=offer,
    )
    if reply is None:
        raise mix.fail(state["run"], nothing_answered(mix.spec.name, calls))
    label = model if answered_by == model else f"{model}->{answered_by}"
    trace = f"aggregate:resume[{label}]"
    return _finish(mix, state, calls, reply.text, list(reply.tool_calls), answered_by, trace, turn)


def _finish(
    mix: MixRuntime,
    state: MixState,
    calls: list[Call],
    answer: str,
    tool_calls: list[ToolCall],
    answered_by: str | None,
    trace: str,
    turn: Sequence[AnyMessage] = (),
) -> dict[str, Any]:
    """Record how the run ended; return the node's update."""
    all_calls = [*state.get("calls", []), *calls]
    used = list(dict.fromkeys(c["model"] for c in all_calls if c["status"] == "ok"))
    stored = stored_answer(answer, mix.spec.gate.constraints.sensitive, sensitive=state["sensitive"])
    mix.record("finish", state["run"], _finish_row(mix, stored, used, all_calls))
    reply = AIMessage(answer, tool_calls=tool_calls) if tool_calls else AIMessage(answer)
    history = [*state.get("history", []), HumanMessage(state["query"]), *turn, reply]
    return {
        "answer": answer,
        "calls": calls,
        "models_used": used,
        "trace": [trace],
        "history": history,
        "tool_calls": tool_calls,
        "answered_by": answered_by,
        "turn": [],  # consumed: with a checkpointer, the thread's next turn must not find it
    }
