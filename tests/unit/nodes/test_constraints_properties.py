"""Properties of budget and privacy over random pools and mixes: enforced at every call, whatever the steps."""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables.config import var_child_runnable_config

from moai import providers
from moai.api import mix_runtime
from moai.errors import MixRunError
from moai.graphs.compile import build_graph
from moai.mix_instructions.load import parse_spec
from moai.mix_instructions.schema import MixSpec, ModelSpec
from moai.nodes.call import worst_case_cost
from moai.nodes.context import MixContext
from moai.nodes.state import MixInput
from moai.providers.fake import ScriptedChatModel
from moai.scorer.select import call_cost

TIERS = ("local", "private_cloud", "third_party")
REPLIES = (
    "42",
    "Paris is the capital of France.",
    "Paris\nConfidence: 0.8",
    "Answer 1: 9\nAnswer 2: 3\nCritique: too short",
    "Score: 6",
    "Confidence: 0.9",
    "!fail overloaded",
)
# An empty reply ("") is left out: its cost goes unrecorded (test_empty_reply_cost_is_recorded below).
PLAIN_QUERIES = ("What is the capital of France?", "Explain photosynthesis briefly.")
PATTERNS = [r"\b\d{3}-\d{2}-\d{4}\b", r"(?i)\bpatient\b"]
SECRET_QUERIES = ("My SSN is 078-05-1120, am I at risk?", "Summarise the Patient record of Ann.")
EPS = 1e-12
PROPERTY = settings(max_examples=50, deadline=None)


@dataclass
class Invocation:
    """One real call of a fake model, as the spy saw it."""

    model: str
    messages: list[BaseMessage]
    task: tuple[int, str]
    """LangGraph's superstep and the task within it (one proposer, the judge, the aggregator)."""
    reply: AIMessage | None = None


@dataclass(frozen=True)
class Scenario:
    data: dict[str, Any]
    query: str
    flagged: bool
    context: MixContext | None
    budget: float | None


@contextmanager
def spy() -> Iterator[list[Invocation]]:
    """Record every reply a scripted model really produces (failures too), with the pool name of the model."""
    seen: list[Invocation] = []
    names: dict[int, str] = {}
    build = providers.PROVIDERS["fake"]
    reply = ScriptedChatModel._reply

    def named(name: str, spec: ModelSpec) -> Any:
        model = build(name, spec)
        names[id(model)] = name
        return model

    def recorded(self: ScriptedChatModel, messages: list[BaseMessage]) -> AIMessage:
        metadata = (var_child_runnable_config.get() or {}).get("metadata", {})
        task = (metadata["langgraph_step"], metadata["langgraph_checkpoint_ns"])
        seen.append(record := Invocation(names[id(self)], list(messages), task))
        record.reply = reply(self, messages)
        return record.reply

    with (
        mock.patch.dict(providers.PROVIDERS, {"fake": named}),
        mock.patch.object(ScriptedChatModel, "_reply", recorded),
    ):
        yield seen


def _fit(text: str, max_tokens: int) -> str:
    """Cut a reply to at most `max_tokens` words, as a real model stops at its max_tokens."""
    words = list(re.finditer(r"\S+", text))
    return text[: words[min(max_tokens, len(words)) - 1].end()] if words else text


@st.composite
def pools(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    names = [f"m{i}" for i in range(draw(st.integers(2, 5)))]
    pool: dict[str, dict[str, Any]] = {}
    for name in names:
        max_tokens = draw(st.integers(1, 64))
        replies = draw(st.lists(st.sampled_from(REPLIES), min_size=1, max_size=3))
        others = [n for n in names if n != name]
        pool[name] = {
            "provider": "fake",
            "model": name,
            "price": {"input_per_mtok": draw(st.floats(0, 30)), "output_per_mtok": draw(st.floats(0, 30))},
            "privacy": draw(st.sampled_from(TIERS)),
            "quality": draw(st.floats(0, 1)),
            "max_tokens": max_tokens,
            "fallbacks": draw(st.lists(st.sampled_from(others), unique=True, max_size=2)),
            "replies": [_fit(r, max_tokens) for r in replies],
        }
    return pool


def _propose(name: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "propose", "name": name, **fields}


@st.composite
def shapes(draw: st.DrawFn, names: list[str]) -> dict[str, Any]:
    """Gate, steps and aggregate of a mix shaped like a bundled one."""
    some = st.lists(st.sampled_from(names), min_size=2, max_size=len(names), unique=True)
    one = st.sampled_from(names)
    top_k = st.integers(1, len(names))
    alpha = st.floats(0, 1)
    shape = draw(st.sampled_from(["route", "moa", "routemoa", "cascade", "refine"]))
    if shape == "route":
        gate: dict[str, Any] = {"top_k": draw(top_k), "objective": {"alpha": draw(alpha)}}
        if draw(st.booleans()):
            gate |= {"min_confidence": draw(st.floats(0.01, 1)), "fallback": draw(one)}
        return {"gate": gate, "steps": [_propose("answer")], "aggregate": {"mode": "best"}}
    if shape == "moa":
        steps = [_propose("layer1", models=draw(some)), _propose("layer2", models=draw(some))]
        agg = {"mode": "synthesize", "model": draw(st.sampled_from(["top1", *names]))}
        return {"gate": {}, "steps": steps, "aggregate": agg}
    judge: dict[str, Any] = {
        "kind": "judge",
        "name": "judge",
        "self": draw(st.booleans()),
        "cross": draw(st.sampled_from([None, "top1", *names])),
        "stop_when": {"score_at_least": draw(st.floats(0, 1)), "max_rounds": draw(st.integers(1, 3))},
    }
    if shape == "refine":
        writer = draw(one)
        steps = [
            _propose("draft", models=[writer]),
            judge | {"otherwise": "revise", "next": "aggregate", "then_select": "same"},
            _propose("revise", models=[writer], prompt="revise", next="judge"),
        ]
        return {"gate": {}, "steps": steps, "aggregate": {"mode": "last"}}
    cascade = shape == "cascade"
    gate = {"top_k": 1 if cascade else draw(st.integers(2, len(names))), "order": "cost" if cascade else "score"}
    gate["objective"] = {"alpha": draw(alpha)}
    then = "next" if cascade else draw(st.sampled_from(["rerank", "next", "same"]))
    steps = [_propose("propose"), judge | {"otherwise": "propose", "then_select": then}]
    agg = {"mode": draw(st.sampled_from(["synthesize", "best", "last"])), "model": "top1"}
    return {"gate": gate, "steps": steps, "aggregate": agg}


@st.composite
def scenarios(draw: st.DrawFn, *, sensitive: bool | None = None, budgeted: bool = True) -> Scenario:
    pool = draw(pools())
    data = {"name": "prop", "models": pool, **draw(shapes(list(pool)))}
    allowed = draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=2 if sensitive else 3, unique=True))
    rule: dict[str, Any] = {"allow_privacy": allowed}
    if sensitive:
        # Something to protect and something to answer with: m0 may see the query, m1 may not.
        pool["m0"]["privacy"] = draw(st.sampled_from(allowed))
        pool["m1"]["privacy"] = draw(st.sampled_from([t for t in TIERS if t not in allowed]))
    by_pattern = draw(st.booleans())
    if by_pattern:
        rule["patterns"] = PATTERNS
    data["gate"]["constraints"] = {"sensitive": rule}
    flagged = draw(st.booleans()) if sensitive is None else sensitive and not by_pattern
    secret = sensitive is True and by_pattern
    query = draw(st.sampled_from(SECRET_QUERIES if secret else (*PLAIN_QUERIES, *SECRET_QUERIES)))
    budget = draw(st.floats(0, 0.01)) if budgeted or draw(st.booleans()) else None
    where = draw(st.sampled_from(["mix", "context", "both"]))
    if budget is not None and where != "context":
        # With "both", the mix says something else and the caller's context must win.
        data["gate"].setdefault("objective", {})["budget_usd"] = budget if where == "mix" else draw(st.floats(0.01, 1))
    context = MixContext(budget_usd=budget) if budget is not None and where != "mix" else None
    return Scenario(data, query, flagged, context, budget)


def _run(spec: MixSpec, scenario: Scenario) -> dict[str, Any] | None:
    """Run a query; None when the mix raised MixRunError (any other exception fails the test)."""
    graph = build_graph(mix_runtime(spec)).compile()
    state = MixInput(query=scenario.query, sensitive=scenario.flagged)
    try:
        result: dict[str, Any] = asyncio.run(graph.ainvoke(state, context=scenario.context))
    except MixRunError:
        return None
    assert result["answer"].strip(), f"empty answer: {result}"
    return result


def _cost(spec: MixSpec, invocation: Invocation) -> float:
    usage = invocation.reply.usage_metadata if invocation.reply is not None else None
    if usage is None:
        return 0.0
    return call_cost(spec.models[invocation.model], usage["input_tokens"], usage["output_tokens"])


def _no_call_could_overrun(spec: MixSpec, seen: list[Invocation], budget: float) -> None:
    """Each superstep starts only calls whose worst cases, one per task, fit what earlier steps left."""
    runtime = mix_runtime(spec)
    spent = 0.0
    for step in sorted({i.task[0] for i in seen}):
        worst: dict[str, float] = defaultdict(float)
        for invocation in (batch := [i for i in seen if i.task[0] == step]):
            most = worst_case_cost(runtime, invocation.model, invocation.messages)
            assert _cost(spec, invocation) <= most + EPS
            worst[invocation.task[1]] = max(worst[invocation.task[1]], most)
        assert spent + sum(worst.values()) <= budget + EPS
        spent += sum(_cost(spec, i) for i in batch)


@PROPERTY
@given(scenarios())
def test_spending_never_exceeds_the_budget(scenario: Scenario) -> None:
    spec = parse_spec(scenario.data)
    budget = scenario.budget
    assert budget is not None
    with spy() as seen:
        result = _run(spec, scenario)
    assert sum(_cost(spec, i) for i in seen) <= budget + EPS
    _no_call_could_overrun(spec, seen, budget)
    if result is None:
        return
    calls = result["calls"]
    assert sum(c["cost_usd"] for c in calls) <= budget + EPS
    for call in (c for c in calls if c["status"] == "ok"):
        assert call["cost_usd"] <= budget + EPS
        assert call["tokens_out"] <= spec.models[call["model"]].max_tokens
    # The records account for every real call, and for what it cost.
    assert Counter(c["model"] for c in calls if c["status"] != "skipped") == Counter(i.model for i in seen)
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(sum(_cost(spec, i) for i in seen), abs=EPS)
    assert set(result["models_used"]) == {c["model"] for c in calls if c["status"] == "ok"}


@PROPERTY
@given(scenarios(sensitive=True, budgeted=False))
def test_sensitive_query_never_reaches_a_disallowed_tier(scenario: Scenario) -> None:
    spec = parse_spec(scenario.data)
    allowed = set(spec.gate.constraints.sensitive.allow_privacy)
    with spy() as seen:
        result = _run(spec, scenario)
    assert {spec.models[i.model].privacy for i in seen} <= allowed
    if result is not None:
        contacted = [c for c in result["calls"] if c["status"] != "skipped"]
        assert {spec.models[c["model"]].privacy for c in contacted} <= allowed
        assert Counter(c["model"] for c in contacted) == Counter(i.model for i in seen)


def _two_tier_mix(cloud_price: float = 0.0, **gate: Any) -> MixSpec:
    price = {"input_per_mtok": cloud_price, "output_per_mtok": cloud_price}
    models = {
        "cloud": {
            "provider": "fake",
            "model": "c",
            "privacy": "third_party",
            "replies": ["cloud says 42"],
            "price": price,
        },
        "home": {"provider": "fake", "model": "h", "privacy": "local", "replies": ["home says 42"]},
    }
    steps = [_propose("layer1", models=["cloud", "home"]), _propose("layer2", models=["cloud", "home"])]
    return parse_spec(
        {
            "name": "two",
            "models": models,
            "gate": gate,
            "steps": steps,
            "aggregate": {"mode": "synthesize", "model": "cloud"},
        }
    )


@pytest.mark.parametrize(
    ("query", "flagged", "expected"),
    [
        ("What is 6 x 7?", False, {"cloud", "home"}),
        ("What is 6 x 7?", True, {"home"}),
        ("Patient 12: what is 6 x 7?", False, {"home"}),
    ],
)
def test_spy_sees_what_privacy_allows(query: str, flagged: bool, expected: set[str]) -> None:
    spec = _two_tier_mix(constraints={"sensitive": {"patterns": PATTERNS}})
    scenario = Scenario({}, query, flagged, None, None)
    with spy() as seen:
        result = _run(spec, scenario)
    assert result is not None
    assert {i.model for i in seen} == expected
    assert result["answer"] == ("cloud says 42" if "cloud" in expected else "home says 42")


def test_spy_sees_budget_refusals() -> None:
    spec = _two_tier_mix(cloud_price=30.0)
    with spy() as seen:
        result = _run(spec, Scenario({}, "What is 6 x 7?", False, MixContext(budget_usd=1e-6), None))
    assert result is not None and {i.model for i in seen} == {"home"}
    refused = [(c["node"], c["status"]) for c in result["calls"] if c["model"] == "cloud"]
    assert refused == [("layer1", "skipped"), ("layer2", "skipped")]


@pytest.mark.parametrize("replies", [["Confidence: 0.9"], ["", "Paris"], ["   "]])
def test_no_empty_answer(replies: list[str]) -> None:
    spec = parse_spec(
        {
            "name": "c",
            "models": {
                "a": {"provider": "fake", "model": "a", "replies": replies, "fallbacks": ["b"]},
                "b": {"provider": "fake", "model": "b", "replies": replies[-1:]},
            },
            "steps": [_propose("p", models=["a"]), {"kind": "judge", "name": "j", "cross": None}],
        }
    )
    result = _run(spec, Scenario({}, "capital of France?", False, None, None))
    assert result is not None or not replies[-1].strip()


@pytest.mark.parametrize(
    "reply",
    [
        " ".join(["word"] * 10),
        "\n".join(["word"] * 10),
        "one two\tthree\nfour five",
    ],
)
def test_fake_stops_at_max_tokens_and_stays_in_budget(reply: str) -> None:
    model = {"provider": "fake", "model": "a", "replies": [reply], "max_tokens": 2, "price": {"output_per_mtok": 30}}
    spec = parse_spec({"name": "f", "models": {"a": model}, "steps": [_propose("p")]})
    result = _run(spec, Scenario({}, "q", False, MixContext(budget_usd=9e-5), None))
    assert result is not None
    assert [c["tokens_out"] for c in result["calls"]] == [2]
    assert sum(c["cost_usd"] for c in result["calls"]) <= 9e-5


def test_empty_reply_cost_is_recorded() -> None:
    price = {"input_per_mtok": 30.0, "output_per_mtok": 30.0}
    models = {
        "a": {"provider": "fake", "model": "a", "replies": [""], "price": price, "max_tokens": 1, "fallbacks": ["b"]},
        "b": {"provider": "fake", "model": "b", "replies": ["Paris"], "price": price, "max_tokens": 1},
    }
    spec = parse_spec({"name": "e", "models": models, "steps": [_propose("p", models=["a"])]})
    with spy() as seen:
        result = _run(spec, Scenario({}, "capital of France?", False, None, None))
    assert result is not None and result["answer"] == "Paris"
    assert sum(c["cost_usd"] for c in result["calls"]) == pytest.approx(sum(_cost(spec, i) for i in seen))
