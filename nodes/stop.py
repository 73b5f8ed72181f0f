"""Stopping: when a judged loop ends, and the node that starts the next layer after a plain step."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Command

from moai.mix_instructions.schema import JudgeStep
from moai.nodes._dispatch import budget_of, route_to
from moai.nodes.context import MixContext
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import MixState

__all__ = ["make_next_layer", "stop_reason"]


def stop_reason(
    step: JudgeStep, best: float, rounds: int, remaining: float | None, has_next: bool, judged: bool
) -> str | None:
    """Return why the loop through this judge ends now, or None to go round again.

    `judged` says whether any self-, cross- or answer-reading assessment could be read. Without one,
    another round of 'rerank' or 'same' would rerun the same models on the same evidence, so the loop
    ends; a 'next' escalation goes on, since not knowing is a reason to ask the next model.
    """
    if step.otherwise is None:
        return "no loop"
    if step.stop_when.score_at_least is not None and best >= step.stop_when.score_at_least:
        return f"score {best:.2f} >= {step.stop_when.score_at_least:g}"
    if rounds >= step.stop_when.max_rounds:
        return f"{rounds} rounds"
    if remaining is not None and remaining <= 0:
        return "budget spent"
    if not has_next:
        return "no model left to try"
    if not judged and step.then_select != "next":
        return "no judgement to act on"
    return None


def make_next_layer(mix: MixRuntime, target: str) -> Callable[..., Coroutine[Any, Any, Command[Any]]]:
    """Return the node that joins a layer of proposers and fans out to the propose step `target`.

    A propose step fans out with `Send`, so what follows it runs once per model; a join between two
    propose steps makes the next layer start once, seeing every answer of this one.
    """

    async def next_layer(state: MixState, runtime: Runtime[MixContext]) -> Command[Any]:
        update, goto = route_to(mix, state, target, budget_of(mix, runtime.context))
        return Command(update=update | {"trace": [f"before_{target}"]}, goto=goto)

    return next_layer
