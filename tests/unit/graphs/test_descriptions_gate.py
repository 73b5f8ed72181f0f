"""Routing from descriptions, with no checkpoint: the bundled first pool sends each kind of query to its model."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import with_fake_models

from moai.api import build_mix
from moai.errors import MixError
from moai.mix_instructions import MixSpec, load_spec
from moai.mix_instructions.schema import ModelSpec


def first_pool() -> MixSpec:
    spec = load_spec("first_pool")
    fake = with_fake_models(spec, {"coder": ["def f(): ..."], "math": ["42"], "general": ["Hello!"]})
    return fake.model_copy(update={"gate": spec.gate})  # keep gate.scorer: descriptions


@pytest.mark.parametrize(
    ("query", "model", "answer"),
    [
        ("How do I sort a list of dictionaries by a key in Python?", "coder", "def f(): ..."),
        ("If I buy 3 apples at 40 cents each, how much do I pay?", "math", "42"),
        ("Hey, what should I cook for dinner tonight?", "general", "Hello!"),
    ],
)
async def test_a_code_a_math_and_a_chat_question_reach_three_different_models(
    query: str, model: str, answer: str
) -> None:
    result: dict[str, Any] = await build_mix(first_pool()).compile().ainvoke({"query": query})
    assert result["trace"] == ["gate", f"answer[{model}]", "aggregate:best"]
    assert [call["model"] for call in result["calls"]] == [model]
    assert result["answer"] == answer


async def test_the_gate_reports_calibrated_scores() -> None:
    graph = build_mix(first_pool()).compile()
    updates = [u async for u in graph.astream({"query": "Compute 17 * 23."}, stream_mode="updates")]
    scores = updates[0]["gate"]["gate"]["scores"]
    assert set(scores) == {"coder", "math", "general"}
    assert all(0 <= s <= 1 for s in scores.values())
    assert max(scores, key=scores.get) == "math"


def with_model(spec: MixSpec, name: str, **fields: Any) -> MixSpec:
    model = ModelSpec(provider="fake", model=name, privacy="local", **fields)
    return spec.model_copy(update={"models": {**spec.models, name: model}})


def test_a_candidate_without_a_description_is_an_error_naming_the_field() -> None:
    spec = with_model(first_pool(), "bare")
    with pytest.raises(MixError, match=r"models\.bare\.description: .*'descriptions' needs a description") as err:
        build_mix(spec)
    assert err.value.field == "models.bare.description"


def test_a_model_left_out_of_the_candidates_needs_no_description() -> None:
    spec = with_model(first_pool(), "bare")
    gate = spec.gate.model_copy(update={"candidates": ["coder", "math", "general"]})
    build_mix(spec.model_copy(update={"gate": gate}))


@pytest.mark.parametrize("scorer", ["priors", "descriptions"])
def test_describe_weight_without_a_checkpoint_is_an_error(scorer: str) -> None:
    spec = first_pool()
    gate = spec.gate.model_copy(update={"scorer": scorer, "describe_weight": 0.3})
    with pytest.raises(MixError, match=r"gate\.describe_weight: blends a checkpoint"):
        build_mix(spec.model_copy(update={"gate": gate}))


def route_with_new_model(**fields: Any) -> MixSpec:
    spec = with_fake_models(load_spec("route"), {"smol": ["S"], "gemma": ["G"], "coder": ["C"]})
    spec = spec.model_copy(update={"gate": load_spec("route").gate})  # the shipped checkpoint
    return with_model(spec, "coder", replies=["C"], **fields)


def test_a_trained_pool_refuses_a_new_model_without_a_description() -> None:
    with pytest.raises(MixError, match=r"gate\.scorer: the checkpoint cannot score coder.*give them a description"):
        build_mix(route_with_new_model())


async def test_a_new_model_in_a_trained_pool_is_scored_from_its_description() -> None:
    # Declared better than the two tiny local models (0.45, 0.4): on the checkpoint's scale it leads
    # where its description fits.
    spec = route_with_new_model(
        quality=1.0,
        description="Writes and debugs Python code",
        examples=["Write a Python function that reverses a list."],
    )
    graph = build_mix(spec).compile()
    query = "Write a Python function that sorts a list of numbers."
    updates = [u async for u in graph.astream({"query": query}, stream_mode="updates")]
    scores = updates[0]["gate"]["gate"]["scores"]
    assert set(scores) == {"smol", "gemma", "coder"}
    assert max(scores, key=scores.get) == "coder"
    result = await graph.ainvoke({"query": query})
    assert [call["model"] for call in result["calls"]] == ["coder"]
    # A query unlike its description stays with the models the checkpoint knows.
    other = await graph.ainvoke({"query": "What is the capital of France?"})
    assert [call["model"] for call in other["calls"]] != ["coder"]
