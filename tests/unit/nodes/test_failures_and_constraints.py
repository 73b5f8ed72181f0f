"""A failing model falls back or is reported; constraints hold; nothing is dropped silently."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from moai.api import mix_runtime
from moai.errors import MixRunError
from moai.graphs.compile import build_graph
from moai.mix_instructions.load import parse_spec
from moai.nodes.call import call_model
from moai.nodes.context import MixContext
from moai.nodes.state import RunInfo
from moai.providers.fake import ScriptedChatModel

RUN = RunInfo(run_id="r1", mix="m", arm=None, thread_id=None, user_id=None)


def spec(models: dict[str, Any], steps: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    data = {
        "name": "t",
        "models": {name: {"provider": "fake", "model": name, **m} for name, m in models.items()},
        "steps": steps or [{"kind": "propose", "name": "answer"}],
        **extra,
    }
    return parse_spec(data)


async def test_a_failing_model_falls_back_in_order_and_every_attempt_is_recorded() -> None:
    mix = mix_runtime(
        spec(
            {
                "a": {"replies": ["!fail 503"], "fallbacks": ["b", "c"]},
                "b": {"replies": ["!fail 500"]},
                "c": {"replies": ["ok"]},
            }
        )
    )
    reply, model, calls = await call_model(
        mix, "n", "a", [HumanMessage("q")], sensitive=False, allowance_usd=None, run=RUN
    )
    assert reply is not None and reply.text == "ok" and model == "c"
    assert [(c["model"], c["status"], c["fallback_for"]) for c in calls] == [
        ("a", "error", None),
        ("b", "error", "a"),
        ("c", "ok", "a"),
    ]
    assert calls[0]["error"] == "RuntimeError: 503"


async def test_a_slow_model_times_out_and_its_fallback_answers() -> None:
    mix = mix_runtime(spec({"slow": {"timeout_s": 0.05, "fallbacks": ["fast"]}, "fast": {"replies": ["quick"]}}))
    mix.use_model("slow", ScriptedChatModel(replies=["late"], delay_s=5))
    reply, model, calls = await call_model(
        mix, "n", "slow", [HumanMessage("q")], sensitive=False, allowance_usd=None, run=RUN
    )
    assert model == "fast" and reply is not None and reply.text == "quick"
    assert calls[0]["status"] == "error" and calls[0]["error"] == "TimeoutError: timed out after 0.05s (2 attempts)"


async def test_a_transient_error_is_retried_with_the_same_model() -> None:
    mix = mix_runtime(spec({"flaky": {"replies": ["!unavailable 503", "back"], "retries": 2, "backoff_s": 0}}))
    reply, model, calls = await call_model(
        mix, "n", "flaky", [HumanMessage("q")], sensitive=False, allowance_usd=None, run=RUN
    )
    assert model == "flaky" and reply is not None and reply.text == "back"
    assert [c["status"] for c in calls] == ["ok"]


async def test_a_model_that_keeps_failing_is_put_in_cooldown_and_the_gate_stops_picking_it() -> None:
    mix = spec(
        {"best": {"quality": 0.9, "replies": ["!fail broken"], "fallbacks": ["next"]}, "next": {"replies": ["N"]}},
        circuit={"failures": 2, "cooldown_s": 3600},
    )
    graph = build_graph(mix_runtime(mix)).compile()
    for _ in range(2):
        result = await graph.ainvoke({"query": "q"})
        assert result["trace"] == ["gate", "answer[best->next]", "aggregate:best"]
    result = await graph.ainvoke({"query": "q"})
    assert result["trace"] == ["gate", "answer[next]", "aggregate:best"]
    assert [c["model"] for c in result["calls"]] == ["next"]


async def test_a_failed_proposer_is_left_out_while_the_others_go_on() -> None:
    mix = spec(
        {"a": {"replies": ["A"]}, "b": {"replies": ["!fail down"]}, "agg": {"replies": ["merged"]}},
        steps=[{"kind": "propose", "name": "p", "models": ["a", "b"]}],
        aggregate={"mode": "synthesize", "model": "agg"},
    )
    result = await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q"})
    # One answer left: nothing to synthesise, so it passes through.
    assert result["trace"] == ["gate", "p[a]", "p[b:failed]", "aggregate:single"]
    assert result["answer"] == "A"
    assert [c["status"] for c in result["calls"]] == ["ok", "error"]


async def test_when_every_route_fails_the_error_lists_what_was_tried() -> None:
    mix = spec({"a": {"replies": ["!fail 1"], "fallbacks": ["b"]}, "b": {"replies": ["!fail 2"]}})
    with pytest.raises(
        MixRunError,
        match=r"no model answered; tried a at answer: error \(RuntimeError: 1\); "
        r"b at answer: error \(RuntimeError: 2\)",
    ):
        await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q"})


async def test_low_confidence_takes_the_declared_fallback() -> None:
    mix = spec(
        {"weak": {"quality": 0.2, "replies": ["W"]}, "safe": {"quality": 0.1, "replies": ["S"]}},
        gate={"candidates": ["weak"], "min_confidence": 0.3, "fallback": "safe"},
    )
    result = await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q"})
    assert result["trace"] == ["gate", "answer[safe]", "aggregate:best"] and result["answer"] == "S"


async def test_a_sensitive_query_never_leaves_the_allowed_tiers() -> None:
    models = {
        "cloud": {"privacy": "third_party", "quality": 0.9, "replies": ["cloud"], "fallbacks": ["home"]},
        "home": {"privacy": "local", "quality": 0.3, "replies": ["home"]},
    }
    routed = spec(models, gate={"constraints": {"sensitive": {"patterns": ["patient"]}}})
    result = await build_graph(mix_runtime(routed)).compile().ainvoke({"query": "my patient has a cough"})
    assert result["answer"] == "home" and {c["model"] for c in result["calls"]} == {"home"}
    fixed = spec(models, steps=[{"kind": "propose", "name": "p", "models": ["cloud"]}])
    result = await build_graph(mix_runtime(fixed)).compile().ainvoke({"query": "q", "sensitive": True})
    assert result["answer"] == "home"
    assert [(c["model"], c["status"]) for c in result["calls"]] == [("cloud", "skipped"), ("home", "ok")]


async def test_no_allowed_model_is_a_clear_error() -> None:
    mix = spec({"cloud": {"privacy": "third_party"}})
    with pytest.raises(MixRunError, match=r"no model may answer this query \(cloud: privacy 'third_party' not allowed"):
        await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q", "sensitive": True})


async def test_an_aggregator_over_budget_is_skipped_and_the_best_answer_stands() -> None:
    mix = spec(
        {
            "a": {"quality": 0.6, "replies": ["A"]},
            "b": {"quality": 0.5, "replies": ["B"]},
            "agg": {"price": {"input_per_mtok": 1000, "output_per_mtok": 1000}, "replies": ["merged"]},
        },
        steps=[{"kind": "propose", "name": "p", "models": ["a", "b"]}],
        aggregate={"mode": "synthesize", "model": "agg"},
    )
    result = await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q"}, context=MixContext(budget_usd=0.01))
    assert result["trace"][-1] == "aggregate:best" and result["answer"] == "A"
    assert result["calls"][-1]["status"] == "skipped" and "exceeds" in (result["calls"][-1]["error"] or "")


async def test_a_proposer_refused_by_the_budget_is_told_its_share_not_the_whole_budget() -> None:
    priced = {"price": {"input_per_mtok": 1000, "output_per_mtok": 1000}, "max_tokens": 100}
    mix = spec({"a": priced, "b": priced}, steps=[{"kind": "propose", "name": "p", "models": ["a", "b"]}])
    with pytest.raises(MixRunError) as caught:
        await build_graph(mix_runtime(mix)).compile().ainvoke({"query": "q"}, context=MixContext(budget_usd=0.2))
    # Nothing was spent yet: each of the two proposers may spend half of the $0.20 budget.
    assert "exceeds this call's $0.100000 share of the budget left" in str(caught.value)


def test_a_compiled_mix_also_runs_synchronously() -> None:
    mix = spec({"a": {"replies": ["A"]}})
    assert build_graph(mix_runtime(mix)).compile().invoke({"query": "q"})["answer"] == "A"
