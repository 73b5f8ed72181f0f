"""Route from a single-task node to the next step: a `Send` per model for a propose step, else its name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.types import Send

from moai.mix_instructions.schema import JudgeStep, ProposeStep
from moai.nodes.context import MixContext
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import ProposeTask

__all__ = ["budget_of", "remaining_budget", "route_to"]


def budget_of(mix: MixRuntime, context: MixContext | None) -> float | None:
    """Return the per-query budget: the caller's override, else the mix's."""
    if context is not None and context.budget_usd is not None:
        return float(context.budget_usd)
    return mix.spec.gate.objective.budget_usd


def remaining_budget(budget: float | None, state: Mapping[str, Any]) -> float | None:
    """Return the US dollars still unspent (None: no budget)."""
    if budget is None:
        return None
    spent: float = sum(call["cost_usd"] for call in state.get("calls", []))
    return max(budget - spent, 0.0)


def route_to(
    mix: MixRuntime, state: Mapping[str, Any], target: str, budget: float | None
) -> tuple[dict[str, Any], str | list[Send]]:
    """Return the state update and the `goto` that start `target` after the current node.

    `state` must already hold the current node's own update (selection, scores). A propose step
    starts a new layer: one `Send` per model, each with an equal share of the remaining budget.
    """
    step = next((s for s in mix.spec.steps if s.name == target), None)
    if not isinstance(step, ProposeStep):
        return {}, target
    layer = state.get("layer", 0) + 1
    entries: Sequence[Any] = state["selected"] if step.models == "selected" else step.models
    previous = [p["content"] for p in state.get("proposals", []) if p["layer"] == layer - 1]
    critique = next((v["critique"] for v in reversed(state.get("verdicts", [])) if v["critique"]), None)
    remaining = remaining_budget(budget, state)
    ask = any(isinstance(s, JudgeStep) and s.self_assess for s in mix.spec.steps)
    sends = []
    for entry in entries:
        model, role, instructions = (
            (entry, None, None) if isinstance(entry, str) else (entry.model, entry.role, entry.instructions)
        )
        task = ProposeTask(
            query=state["query"],
            history=state.get("history", []),
            sensitive=state["sensitive"],
            run=state["run"],
            step=step.name,
            layer=layer,
            model=model,
            role=role,
            instructions=instructions,
            references=previous,
            critique=critique,
            ask_confidence=ask,
            allowance_usd=None if remaining is None else remaining / len(entries),
        )
        sends.append(Send(step.name, task))
    return {"layer": layer}, sends
