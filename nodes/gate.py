"""The gate: score the pool from the query alone, drop what a hard constraint forbids, pick the top k."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite

from moai.errors import MixRunError
from moai.nodes._dispatch import budget_of, route_to
from moai.nodes.context import MixContext, caller, caller_key
from moai.nodes.runtime import MixRuntime
from moai.nodes.state import GateDecision, MixState, RunInfo
from moai.scorer.privacy import stored_query
from moai.scorer.select import excluded, is_sensitive, rank

__all__ = ["decide", "make_gate"]


def _texts(history: Sequence[BaseMessage | Any]) -> list[str]:
    # A caller may pass the earlier turns as dicts or tuples: the models get them all the same.
    return [m.text if isinstance(m, BaseMessage) else str(m) for m in history]


def decide(
    mix: MixRuntime,
    query: str,
    flagged: bool,
    top_k: int | None = None,
    kept: str | None = None,
    history: Sequence[BaseMessage | Any] = (),
) -> GateDecision:
    """Score, filter and rank the candidates for one query.

    The query is sensitive when the caller flagged it, or when the rule's detectors or patterns find
    something in it or in the `history` sent with it.

    `kept` is the model a thread's earlier turns went to: with `gate.sticky` set, it stays first while
    no constraint rules it out and its score for this query is at least that threshold.

    With `gate.learn`, the allowed models (and only they) are scored by the mix's bandit, starting from
    the scorer's scores: its estimate, or on the declared share of queries an exploring one.

    Raises:
        MixRunError: Every candidate breaks a hard constraint.
    """
    gate = mix.spec.gate
    candidates = gate.candidates if gate.candidates is not None else list(mix.spec.models)
    sensitive = is_sensitive(query, flagged, gate.constraints.sensitive, _texts(history))
    predicted, cache_hit = mix.scores(query, candidates)
    scores = dict(zip(candidates, predicted, strict=True))
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
    if mix.online is not None:
        # The bandit sees only what no hard constraint rules out, so exploring can never break one; it
        # does not explore on a sensitive query, which is never learned from.
        allowed, _ = mix.online.scores(query, allowed, may_explore=not sensitive)
        scores = scores | allowed
    ranking = rank(allowed, mix.spec.models, gate.order, gate.objective.alpha)
    stays = False
    if kept is not None and gate.sticky is not None and allowed.get(kept, -1.0) >= gate.sticky:
        ranking, stays = [kept, *(name for name in ranking if name != kept)], True
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
        kept=stays and not fallback_used,
        cache_hit=cache_hit,
    )


def make_gate(mix: MixRuntime) -> Callable[..., Coroutine[Any, Any, Command[Any]]]:
    """Return the gate node; it starts the mix's first step."""
    first = mix.spec.steps[0].name

    async def gate(state: MixState, runtime: Runtime[MixContext]) -> Command[Any]:
        context = runtime.context or MixContext()
        thread_id, user_id = caller(context)
        run_id = context.run_id or str(uuid.uuid4())
        run = RunInfo(run_id=run_id, mix=mix.spec.name, arm=state.get("arm"), thread_id=thread_id, user_id=user_id)
        if (key_id := caller_key(context)) is not None:
            run["key_id"] = key_id
        row = {"mix": run["mix"], "arm": run["arm"], "thread_id": run["thread_id"], "user_id": run["user_id"]}
        query, flagged, history = state["query"], state.get("sensitive", False), state.get("history", [])
        rule = mix.spec.gate.constraints.sensitive
        turn = state.get("turn") or []
        if context.resume is not None:
            return _resume(mix, state, context.resume, run, row)
        try:
            decision = decide(mix, query, flagged, context.top_k, state.get("kept"), [*history, *turn])
        except MixRunError as err:
            # Refused queries are mostly sensitive ones that no allowed model may take: redacted as well.
            sensitive = is_sensitive(query, flagged, rule, _texts(history))
            row["query"] = stored_query(query, rule, sensitive=sensitive, flagged=flagged)
            mix.record("run", run, row | {"status": "error", "error": str(err), "finished_ts": time.time()})
            raise
        row["query"] = stored_query(query, rule, sensitive=decision["sensitive"], flagged=flagged)
        chosen = {
            "selected": decision["selected"],
            "scores": decision["scores"],
            "kept": int(decision["kept"]),
            "cache_hit": int(decision["cache_hit"]),
        }
        if turn:
            # Tool results whose caller is not known (a conversation built by hand): the gate's first
            # choice continues it.
            return _resume(mix, state, decision["selected"][0], run, row)
        mix.record("run", run, row | chosen | {"status": "running"})
        if not decision["sensitive"]:
            # A sensitive query's embedding is not stored: its text is not, and an embedding gives much of it away.
            mix.learned_from(run, query, decision["selected"])
        update: dict[str, Any] = {
            "run": run,
            "kept": decision["selected"][0],
            "history": state.get("history", []),
            "query": state["query"],
            "sensitive": decision["sensitive"],
            "gate": decision,
            "scores": dict(decision["scores"]),
            "selected": decision["selected"],
            "tried": list(decision["selected"]),
            "layer": 0,
            "rounds": {},
            "turn": [],
        }
        more, goto = route_to(mix, update, first, budget_of(mix, context))
        # A thread's next turn starts its records afresh: with a checkpointer, the lists would go on growing.
        return Command(update=update | more | _fresh("gate"), goto=goto)

    return gate


def _fresh(trace: str) -> dict[str, Overwrite]:
    # A thread's next turn starts its records afresh: with a checkpointer, the lists would go on growing.
    return {key: Overwrite([]) for key in ("proposals", "verdicts", "calls")} | {"trace": Overwrite([trace])}


def _resume(mix: MixRuntime, state: MixState, model: str, run: RunInfo, row: dict[str, Any]) -> Command[Any]:
    """Send a turn that carries tool results straight to the model that called the tools, via the aggregator.

    No scoring and no proposers: the call continues the one that asked for the tools. Privacy and budget
    still hold, since `call_model` enforces them on that call and its fallbacks.

    Raises:
        MixRunError: The mix has no model of that name.
    """
    query, flagged, history = state["query"], state.get("sensitive", False), state.get("history", [])
    turn = list(state.get("turn", []))
    rule = mix.spec.gate.constraints.sensitive
    # What the tools returned may be what makes the query sensitive.
    sensitive = is_sensitive(query, flagged, rule, _texts([*history, *turn]))
    row["query"] = stored_query(query, rule, sensitive=sensitive, flagged=flagged)
    if model not in mix.spec.models:
        models = ", ".join(mix.spec.models)
        error = f"mix '{mix.spec.name}': resume: no model '{model[:64]}' in the mix; its models: {models}"
        mix.record("run", run, row | {"status": "error", "error": error, "finished_ts": time.time()})
        raise MixRunError(error)
    decision = GateDecision(
        scores={},
        ranking=[model],
        excluded={},
        selected=[model],
        sensitive=sensitive,
        fallback_used=False,
        kept=True,
        cache_hit=False,
    )
    mix.record("run", run, row | {"selected": [model], "scores": {}, "kept": 1, "cache_hit": 0, "status": "running"})
    update: dict[str, Any] = {
        "run": run,
        "kept": model,
        "history": history,
        "query": query,
        "sensitive": sensitive,
        "gate": decision,
        "scores": {},
        "selected": [model],
        "tried": [model],
        "layer": 0,
        "rounds": {},
        "turn": turn,
    }
    return Command(update=update | _fresh("gate:resume"), goto="aggregate")
