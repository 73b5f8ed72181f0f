"""The gate: score the pool from the query alone, drop what a hard constraint forbids, pick the top k."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Command

from nodes._dispatch import budget_of, route_to
from nodes._runtime import MixRunError, MixRuntime
from nodes.context import MixContext
from nodes.state import GateDecision, MixInput
from scorer.select import excluded, is_sensitive, rank

__all__ = ["decide", "make_gate"]


def decide(mix: MixRuntime, query: str, flagged: bool, top_k: int | None = None) -> GateDecision:
    """Score, filter and rank the candidates for one query.

    Raises:
        MixRunError: Every candidate breaks a hard constraint.
    """
    gate = mix.spec.gate
    candidates = gate.candidates if gate.candidates is not None else list(mix.spec.models)
    sensitive = is_sensitive(query, flagged, gate.constraints.sensitive)
    scores = dict(zip(candidates, mix.scorer.predict([query], candidates)[0], strict=True))
    out = excluded({name: mix.spec.models[name] for name in candidates}, gate.constraints, sensitive)
    cooling = {name: why for name in candidates if name not in out and (why := mix.breaker.open_reason(name))}
    healthy = {name: score for name, score in scores.items() if name not in out and name not in cooling}
    if healthy:
        out |= cooling
    # With nothing healthy left, a cooling model is still selected: its call goes to its fallbacks.
    allowed = healthy or {name: score for name, score in scores.items() if name not in out}
    if not allowed:
        reasons = "; ".join(f"{name}: {why}" for name, why in out.items())
        raise MixRunError(f"mix '{mix.spec.name}': no model may answer this query ({reasons})")
    ranking = rank(allowed, mix.spec.models, gate.order, gate.objective.alpha)
    selected = ranking[: top_k or gate.top_k]
    fallback_used = False
    if allowed[selected[0]] < gate.min_confidence and gate.fallback is not None and gate.fallback not in out:
        selected, fallback_used = [gate.fallback], True
    return GateDecision(
        scores=scores,
        ranking=ranking,
        excluded=out,
        selected=selected,
        sensitive=sensitive,
        fallback_used=fallback_used,
    )


def make_gate(mix: MixRuntime) -> Callable[..., Coroutine[Any, Any, Command[Any]]]:
    """Return the gate node; it starts the mix's first step."""
    first = mix.spec.steps[0].name

    async def gate(state: MixInput, runtime: Runtime[MixContext]) -> Command[Any]:
        context = runtime.context
        decision = decide(mix, state["query"], state.get("sensitive", False), context.top_k if context else None)
        update: dict[str, Any] = {
            "query": state["query"],
            "sensitive": decision["sensitive"],
            "gate": decision,
            "scores": dict(decision["scores"]),
            "selected": decision["selected"],
            "tried": list(decision["selected"]),
            "layer": 0,
            "rounds": {},
            "trace": ["gate"],
        }
        more, goto = route_to(mix, update, first, budget_of(mix, context))
        return Command(update=update | more, goto=goto)

    return gate
