"""The judge: self-, cross- and answer-reading assessment of the latest answers, blended; then stop or loop."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from statistics import fmean
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Command

from moai.mix_instructions.check import step_successors
from moai.mix_instructions.schema import JudgeStep
from moai.nodes._dispatch import budget_of, remaining_budget, route_to
from moai.nodes.call import call_model
from moai.nodes.context import MixContext
from moai.nodes.prompts import judge_messages, parse_judgement
from moai.nodes.runtime import MixRuntime, nothing_answered
from moai.nodes.state import Call, MixState, Proposal, Verdict
from moai.nodes.stop import stop_reason
from moai.scorer.answers import aread_scores
from moai.scorer.verifier import READS

__all__ = ["make_judge"]


def make_judge(mix: MixRuntime, step: JudgeStep) -> Callable[..., Coroutine[Any, Any, Command[Any]]]:
    """Return the node of a judge step."""
    exit_to = step_successors(mix.spec)[step.name]

    async def judge(state: MixState, runtime: Runtime[MixContext]) -> Command[Any]:
        budget = budget_of(mix, runtime.context)
        latest = [p for p in state["proposals"] if p["layer"] == state["layer"]]
        if not latest:
            if not state["proposals"]:
                raise mix.fail(state["run"], nothing_answered(mix.spec.name, state["calls"]))
            latest = [p for p in state["proposals"] if p["layer"] == max(q["layer"] for q in state["proposals"])]
        if any(p.get("tool_calls") for p in latest):
            # A model called the caller's tools: its call goes back to the caller, unjudged; the turn with
            # the tools' results comes back to that model (see the gate's `resume`).
            more, goto = route_to(mix, state, exit_to, budget)
            return Command(update={"trace": [f"{step.name}:stop(tool call)"]} | more, goto=goto)
        cross: list[float | None] = [None] * len(latest)
        critique: str | None = None
        calls: list[Call] = []
        judge_model = _judge_model(step, latest, state["scores"])
        if judge_model is not None:
            answers = [p["content"] for p in latest]
            reply, _, calls = await call_model(
                mix,
                step.name,
                judge_model,
                judge_messages(state["query"], answers),
                sensitive=state["sensitive"],
                allowance_usd=remaining_budget(budget, state),
                run=state["run"],
            )
            judgement = None if reply is None else parse_judgement(reply.text, len(latest), [state["query"], *answers])
            if judgement is not None:
                cross, critique = [*judgement.scores], judgement.critique
        # Model output is data here: the texts are parsed by pure functions, never sent as instructions.
        read = await _read(mix, step, state["query"], latest)
        verdicts = [
            _verdict(step, p, c, r, state["gate"]["scores"], critique)
            for p, c, r in zip(latest, cross, read, strict=True)
        ]
        if not state["sensitive"]:
            for verdict in verdicts:
                if verdict["cross_score"] is not None:
                    mix.reward(state["run"], verdict["model"], verdict["cross_score"], "judge")
        scores = dict(state["scores"])
        for model in {v["model"] for v in verdicts}:
            scores[model] = fmean(v["score"] for v in verdicts if v["model"] == model)
        rounds = state["rounds"] | {step.name: state["rounds"].get(step.name, 0) + 1}
        selected, tried = _next_selection(mix, step, state, scores)
        after = {**state, "calls": state["calls"] + calls, "selected": selected}
        reason = stop_reason(
            step,
            max(v["score"] for v in verdicts),
            rounds[step.name],
            remaining_budget(budget, after),
            has_next=bool(selected),
            judged=any(_observed(v) for v in verdicts),
        )
        update: dict[str, Any] = {
            "verdicts": verdicts,
            "calls": calls,
            "scores": scores,
            "rounds": rounds,
            "trace": [f"{step.name}:{'stop' if reason else 'again'}"],
        }
        if reason is None:
            update |= {"selected": selected, "tried": tried}
        more, goto = route_to(mix, after, exit_to if reason else step.otherwise or exit_to, budget)
        return Command(update=update | more, goto=goto)

    judge.__name__ = step.name
    return judge


def _judge_model(step: JudgeStep, latest: list[Proposal], scores: dict[str, float]) -> str | None:
    if step.cross != "top1":
        return step.cross
    return max((p["model"] for p in latest), key=lambda model: scores[model])


async def _read(mix: MixRuntime, step: JudgeStep, query: str, latest: list[Proposal]) -> list[dict[str, float | None]]:
    """Return each answer's score by each declared answer-reading judge, in the order declared.

    The verifier knows a model by its name in the mix or by its model id (a replay model's recorded
    model); a model it knows neither way is scored as unknown (by its prior over all models).
    """
    answers = [p["content"] for p in latest]
    read = await aread_scores(step.read, query, answers, [p.get("logprob") for p in latest])
    if "verifier" in step.read:
        verifier = mix.verifiers[step.name]
        known = set(verifier.models)
        ids = [
            p["model"]
            if p["model"] in known or p["model"] not in mix.spec.models
            else mix.spec.models[p["model"]].model
            for p in latest
        ]
        for scores, probability in zip(read, verifier.score(query, answers, ids), strict=True):
            scores["verifier"] = probability
    return read


def _verdict(
    step: JudgeStep,
    proposal: Proposal,
    cross: float | None,
    read: dict[str, float | None],
    prior: dict[str, float],
    critique: str | None,
) -> Verdict:
    """Blend the gate's prior with what was observed: the stated confidence, the judge's score, the read scores.

    Beside a judge, a stated confidence counts only next to the judge's score of the same answer. Without
    a verdict it would be the only evidence, and count for all of what the blend gives the observations,
    so that an answer could win by its own claim (or by making the judge's reply unreadable).

    The answer-reading judges (`read:`) enter as one observation: the mean of those that gave a score.
    A declared rule, equal to self and cross.

    With the verifier (`read: [verifier]`) the weights are learned: its P(right) is already the fitted
    combination of what 'form' and 'arithmetic' read with a prior of the model on similar queries, so
    those two are not counted again, and the gate's prior is not blended in again (prior_weight is
    not applied). The reading observation is the mean of the verifier's P(right) with the read judges
    it does not read (agreement); the score is the mean of that with self and cross, where declared.
    """
    stated = proposal["confidence"] if step.self_assess and (step.cross is None or cross is not None) else None
    verified = read.get("verifier")
    if verified is not None:
        given = [verified, *(s for name, s in read.items() if name not in (*READS, "verifier") and s is not None)]
    else:
        given = [s for s in read.values() if s is not None]
    reading = fmean(given) if given else None
    observed = [s for s in (stated, cross, reading) if s is not None]
    base = prior.get(proposal["model"], 0.5)
    if verified is not None:
        score = fmean(observed)
    else:
        score = step.prior_weight * base + (1 - step.prior_weight) * fmean(observed) if observed else base
    return Verdict(
        step=step.name,
        layer=proposal["layer"],
        model=proposal["model"],
        self_score=stated,
        cross_score=cross,
        read_scores=read,
        score=score,
        critique=critique,
    )


def _observed(verdict: Verdict) -> bool:
    """Whether anything was observed of an answer: a stated confidence, a judge's score, a read score."""
    read = any(s is not None for s in verdict["read_scores"].values())
    return read or verdict["self_score"] is not None or verdict["cross_score"] is not None


def _next_selection(
    mix: MixRuntime, step: JudgeStep, state: MixState, scores: dict[str, float]
) -> tuple[list[str], list[str]]:
    """Return the models of the next round and every model tried so far."""
    ranking = state["gate"]["ranking"]
    if step.then_select == "same":
        selected = list(state["selected"])
    elif step.then_select == "next":
        selected = [name for name in ranking if name not in state["tried"]][:1]
    else:
        top_k = len(state["gate"]["selected"])
        selected = sorted(ranking, key=lambda name: -scores[name])[:top_k]
    return selected, list(dict.fromkeys([*state["tried"], *selected]))
