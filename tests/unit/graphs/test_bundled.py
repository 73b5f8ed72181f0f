"""Every bundled mix: parsed, compiled, drawn, and invoked on scripted models, down to the exact path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import fake_bundled, with_fake_models
from langgraph.checkpoint.memory import InMemorySaver

from moai.api import build_mix
from moai.mix_instructions import MixSpec, bundled_mixes, load_any, load_spec

SNAPSHOTS = Path(__file__).parent / "snapshots"

# mix -> (scripted replies per model, expected path, expected answer)
CASES: dict[str, tuple[dict[str, list[str]], list[str], str]] = {
    "route": (
        {"smol": ["Paris."]},
        ["gate", "answer[smol]", "aggregate:best"],
        "Paris.",
    ),
    "moa": (
        {"smol": ["s1", "s2", "merged answer"], "gemma": ["g1", "g2"]},
        [
            "gate",
            "layer1[smol]",
            "layer1[gemma]",
            "before_layer2",
            "layer2[smol]",
            "layer2[gemma]",
            "aggregate:synthesize",
        ],
        "merged answer",
    ),
    "routemoa": (
        {"smol": ["S1\nConfidence: 1.0", "Answer 1: 10\nCritique: fine"]},
        ["gate", "propose[smol]", "judge:stop", "aggregate:single"],
        "S1",
    ),
    "cascade": (
        {"smol": ["unsure\nConfidence: 0.1"], "gemma": ["sure\nConfidence: 0.95"]},
        ["gate", "try[smol]", "check:again", "try[gemma]", "check:stop", "aggregate:best"],
        "sure",
    ),
    "chain": (
        {"gemma": ["draft"], "smol": ["improved"]},
        ["gate", "draft[gemma]", "before_improve", "improve[smol]", "aggregate:last"],
        "improved",
    ),
    "refine": (
        {"smol": ["first", "second"], "gemma": ["Answer 1: 4\nCritique: too short", "Answer 1: 10\nCritique: good"]},
        ["gate", "draft[smol]", "critique:again", "revise[smol]", "critique:stop", "aggregate:last"],
        "second",
    ),
    "first_pool": (  # scripted models score by the declared priors: general (0.5) answers
        {"general": ["Paris."]},
        ["gate", "answer[general]", "aggregate:best"],
        "Paris.",
    ),
    "panel": (
        {"smol": ["legal view", "both views"], "gemma": ["ethical view"]},
        ["gate", "analyses[smol/legal]", "analyses[gemma/ethics]", "aggregate:synthesize"],
        "both views",
    ),
}


def test_every_bundled_mix_has_a_case() -> None:
    assert sorted(CASES) == [name for name in bundled_mixes() if isinstance(load_any(name), MixSpec)]


@pytest.mark.parametrize("name", sorted(CASES))
async def test_bundled_mix_runs_its_path(name: str) -> None:
    replies, path, answer = CASES[name]
    graph = build_mix(fake_bundled(name, replies)).compile()
    result: dict[str, Any] = await graph.ainvoke({"query": "What is the capital of France?"})
    assert result["trace"] == path
    assert result["answer"] == answer
    assert all(call["status"] == "ok" for call in result["calls"])
    assert set(result["models_used"]) == {call["model"] for call in result["calls"]}


@pytest.mark.parametrize("name", bundled_mixes())
def test_bundled_mix_draws_as_pinned(name: str) -> None:
    drawing = build_mix(name).compile().get_graph().draw_mermaid()
    assert drawing == (SNAPSHOTS / f"{name}.mmd").read_text(encoding="utf-8")


def without_reading(spec: MixSpec) -> MixSpec:
    """Return the mix with its judge steps reading no answers: the blend of self, cross and the gate's prior."""
    steps = [s.model_copy(update={"read": []}) if s.kind == "judge" else s for s in spec.steps]
    return spec.model_copy(update={"steps": steps})


async def test_routemoa_reranks_after_a_poor_judgement_and_the_new_top_model_answers() -> None:
    # Round 1: smol's blended score 0.3*0.45 + 0.7*0.2 = 0.275 falls below gemma's prior 0.4, so the
    # rerank picks gemma; gemma judges its own answer 9/10: 0.3*0.4 + 0.7*0.9 = 0.75 stops the loop.
    # (Without the read judges, which would add an observation to the blend: see the tests below.)
    replies = {"smol": ["S1\nConfidence: 0.2", "Answer 1: 2\nCritique: weak"], "gemma": ["G2", "Answer 1: 9"]}
    result = await build_mix(without_reading(fake_bundled("routemoa", replies))).compile().ainvoke({"query": "q"})
    assert result["trace"] == [
        "gate",
        "propose[smol]",
        "judge:again",
        "propose[gemma]",
        "judge:stop",
        "aggregate:single",
    ]
    assert [(c["node"], c["model"]) for c in result["calls"]] == [
        ("propose", "smol"),
        ("judge", "smol"),
        ("propose", "gemma"),
        ("judge", "gemma"),
    ]
    assert result["answer"] == "G2"


@pytest.mark.parametrize("name", ["cascade", "routemoa"])
def test_cascade_and_routemoa_read_the_answers(name: str) -> None:
    (judge,) = [s for s in load_spec(name).steps if s.kind == "judge"]
    assert judge.read == ["form", "arithmetic"]


async def test_the_cascade_escalates_an_answer_whose_arithmetic_is_wrong() -> None:
    name = "cascade"
    query = "What is 12 times 7?"
    wrong, right = "12 * 7 = 80\nConfidence: 0.9", "12 * 7 = 84\nConfidence: 0.9"
    replies = {"smol": [wrong, "Answer 1: 9"], "gemma": [right, "Answer 1: 9"]}
    graph = build_mix(fake_bundled(name, replies)).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    result = await graph.ainvoke({"query": query}, config)
    verdicts = (await graph.aget_state(config)).values["verdicts"]
    # smol's own 0.9 does not outweigh the recomputed 12 * 7: the cascade escalates to gemma.
    assert verdicts[0]["model"] == "smol" and verdicts[0]["read_scores"]["arithmetic"] == 0.0
    assert verdicts[-1]["model"] == "gemma" and verdicts[-1]["read_scores"]["arithmetic"] == 1.0
    assert result["answer"].startswith("12 * 7 = 84")


async def test_a_judge_step_reading_with_the_shipped_verifier_scores_by_its_p_right() -> None:
    from moai.scorer.verifier import cached_verifier, resolve_verifier

    spec = load_spec("cascade")
    steps = [
        s.model_copy(update={"read": ["form", "arithmetic", "verifier"]}) if s.kind == "judge" else s
        for s in spec.steps
    ]
    spec = spec.model_copy(update={"steps": steps})
    query = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    answer = "3 + 4 = 7\nAnswer: 7\nConfidence: 0.8"
    replies = {"smol": [answer], "gemma": [answer]}
    graph = build_mix(with_fake_models(spec, replies)).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"query": query}, config)
    verdict = (await graph.aget_state(config)).values["verdicts"][0]
    # The local models are unknown to the shipped verifier: it scores them by its prior over all models.
    (p,) = cached_verifier(resolve_verifier("bundled:verifier")).score(query, ["3 + 4 = 7\nAnswer: 7"], [None])
    assert verdict["read_scores"] == {"form": 1.0, "arithmetic": 1.0, "verifier": pytest.approx(p)}
    # The verdict: the mean of the verifier's P(right) with the stated confidence.
    assert verdict["score"] == pytest.approx((p + 0.8) / 2)


async def test_a_loop_with_no_readable_judgement_stops_instead_of_repeating_itself() -> None:
    replies = {"smol": ["S1", "I cannot grade this."]}
    result = await build_mix(fake_bundled("routemoa", replies)).compile().ainvoke({"query": "q"})
    assert result["trace"] == ["gate", "propose[smol]", "judge:stop", "aggregate:single"]
    assert result["answer"] == "S1"


@pytest.mark.parametrize("name", ["route", "routemoa"])
async def test_route_and_routemoa_gate_on_the_shipped_learned_scorer(name: str) -> None:
    from moai.scorer.checkpoint import load
    from moai.scorer.locate import resolve_checkpoint

    spec = load_spec(name)
    assert spec.gate.scorer == "bundled:local-pool"
    scorer = load(resolve_checkpoint(spec.gate.scorer))
    query = "What is the capital of France?"
    expected = dict(zip(["smol", "gemma"], scorer.predict([query], ["smol", "gemma"])[0], strict=True))
    fake = fake_bundled(name, {"smol": ["Paris."], "gemma": ["Paris."]})
    graph = build_mix(fake.model_copy(update={"gate": spec.gate})).compile()
    updates = [update async for update in graph.astream({"query": query}, stream_mode="updates")]
    assert updates[0]["gate"]["gate"]["scores"] == pytest.approx(expected)
    assert expected != {"smol": 0.45, "gemma": 0.4}  # learned, not the declared priors


async def test_sync_invoke_works_inside_a_running_event_loop() -> None:
    # As in a notebook cell or an async app that calls `invoke`: the nodes get a loop of their own.
    graph = build_mix(fake_bundled("moa", {})).compile()
    result = graph.invoke({"query": "Q"}, {"configurable": {"thread_id": "t"}})
    assert result["answer"] and result["run"]["thread_id"] == "t"
