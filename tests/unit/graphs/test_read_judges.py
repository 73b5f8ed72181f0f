"""A judge step that reads the answers (`read:`) stops a loop on evidence it computes, without a model call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from moai.api import mix_runtime
from moai.errors import MixError
from moai.graphs.compile import build_graph
from moai.mix_instructions.load import parse_spec

QUERY = "Tom had 7 apples and ate 3. How many apples are left?"


def agreeing_mix(a: list[str], b: list[str], read: list[str] | None = None) -> dict[str, Any]:
    """Two scripted proposers, looped by a judge that only reads their answers (no self, no cross)."""
    return {
        "name": "agree",
        "models": {
            "a": {"provider": "fake", "model": "a", "replies": a},
            "b": {"provider": "fake", "model": "b", "replies": b},
        },
        "gate": {"candidates": ["a", "b"], "top_k": 2},
        "steps": [
            {"kind": "propose", "name": "answer"},
            {
                "kind": "judge",
                "name": "grade",
                "self": False,
                "cross": None,
                "read": ["agreement"] if read is None else read,
                "prior_weight": 0,
                "then_select": "same",
                "stop_when": {"score_at_least": 0.99, "max_rounds": 3},
                "otherwise": "answer",
            },
        ],
        "aggregate": {"mode": "best"},
    }


def run(mix: dict[str, Any], query: str = QUERY) -> dict[str, Any]:
    graph = build_graph(mix_runtime(parse_spec(mix), usage_db="off")).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}

    async def go() -> dict[str, Any]:
        await graph.ainvoke({"query": query}, config)
        return dict((await graph.aget_state(config)).values)

    return asyncio.run(go())


def test_agreeing_answers_stop_the_loop_and_differing_ones_go_on() -> None:
    # round 1: 3 vs 4 (differ); round 2: 4 vs '4 apples' (agree after normalising the final number)
    state = run(agreeing_mix(["Answer: 3", "Answer: 4"], ["Answer: 4", "So 7 - 3 = 4 apples."]))
    assert state["trace"] == [
        "gate",
        "answer[a]",
        "answer[b]",
        "grade:again",
        "answer[a]",
        "answer[b]",
        "grade:stop",
        "aggregate:best",
    ]
    assert [(v["layer"], v["model"], v["read_scores"], v["score"]) for v in state["verdicts"]] == [
        (1, "a", {"agreement": 0.0}, 0.0),
        (1, "b", {"agreement": 0.0}, 0.0),
        (2, "a", {"agreement": 1.0}, 1.0),
        (2, "b", {"agreement": 1.0}, 1.0),
    ]
    assert [(v["self_score"], v["cross_score"]) for v in state["verdicts"]] == [(None, None)] * 4
    assert [call["model"] for call in state["calls"]] == ["a", "b", "a", "b"]  # no judge model was called
    assert state["answer"] == "Answer: 4"


def test_answers_that_never_agree_run_to_max_rounds() -> None:
    state = run(agreeing_mix(["Answer: 3"], ["Answer: 4"]))
    loop = ["answer[a]", "answer[b]", "grade:again"]
    assert state["trace"] == ["gate", *loop, *loop, "answer[a]", "answer[b]", "grade:stop", "aggregate:best"]
    assert {v["read_scores"]["agreement"] for v in state["verdicts"]} == {0.0}


def test_the_read_scores_average_into_one_observation() -> None:
    # agreement 1.0, form 1.0 (a number for 'how many'), arithmetic: a's 7 - 3 = 5 is wrong (0.0), b writes none
    mix = agreeing_mix(["7 - 3 = 5, so Answer: 4"], ["Answer: 4"], read=["agreement", "form", "arithmetic"])
    state = run(mix)
    assert [(v["model"], v["read_scores"], v["score"]) for v in state["verdicts"]] == [
        ("a", {"agreement": 1.0, "form": 1.0, "arithmetic": 0.0}, pytest.approx(2 / 3)),
        ("b", {"agreement": 1.0, "form": 1.0, "arithmetic": None}, 1.0),
    ]
    assert state["trace"][-2:] == ["grade:stop", "aggregate:best"]


@pytest.mark.parametrize(
    ("read", "field"),
    [(["agreement", "agreement"], "steps.1.read.1"), (["vibes"], "steps.1.read.0")],
)
def test_a_wrong_read_list_names_the_field(read: list[str], field: str) -> None:
    with pytest.raises(MixError) as error:
        parse_spec(agreeing_mix(["x"], ["y"], read=read))
    assert field in str(error.value)


# Two recorded GSM8K answers of GPT-4-1106 and Mixtral-8x7B (shared responses data): they agree on one, not the other.
RECORDED = [
    {
        "id": "gsm8k-579",
        "prompt": "A boy has 5 cards. His brother has 3 fewer cards than he has. How many cards do they have together?",
        "answers": {
            "gpt-4-1106-preview": "The boy's brother has 5 - 3 = <<5-3=2>>2 cards.\n"
            "Together, they have 5 + 2 = <<5+2=7>>7 cards.",
            "mistralai/Mixtral-8x7B-Instruct-v0.1": " The boy's brother has 5 - 3 = <<5-3=2>>2 fewer cards.\n"
            "Together, they have 5 + 2 = <<5+2=7>>7 cards.\n#### 7\n\n",
        },
    },
    {
        "id": "gsm8k-949",
        "prompt": "Marcus is half of Leo\u2019s age and five years younger than Deanna. Deanna is 26. How old is Leo?",
        "answers": {
            "gpt-4-1106-preview": "If Deanna is 26 and Marcus is five years younger than Deanna, then Marcus is "
            "26 - 5 = 21 years old.\n\nSince Marcus is half of Leo's age, Leo is twice Marcus's age, which means "
            "Leo is 21 * 2 = 42 years old.",
            "mistralai/Mixtral-8x7B-Instruct-v0.1": " Leo is 26 * 2 = <<26*2=52>>52 / 2 = <<26*2/2=26>>26 years old."
            "\n#### 26",
        },
    },
]


def test_recorded_answers_of_real_models_are_read_through_replay(tmp_path: Path) -> None:
    rows = [
        {"id": q["id"], "prompt": q["prompt"], "task": "gsm8k", "model": m, "score": 1.0, "cost": 0.001, "response": r}
        for q in RECORDED
        for m, r in q["answers"].items()
    ]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    replayed = {"provider": "replay", "responses": str(tmp_path / "answers.jsonl")}
    mix = agreeing_mix([], [], read=["agreement", "form", "arithmetic"])
    mix["models"] = {
        "a": replayed | {"model": "mistralai/Mixtral-8x7B-Instruct-v0.1"},
        "b": replayed | {"model": "gpt-4-1106-preview"},
    }
    agreed, differed = (run(mix, query["prompt"]) for query in RECORDED)
    assert agreed["trace"][-2:] == ["grade:stop", "aggregate:best"]
    assert [v["read_scores"] for v in agreed["verdicts"]] == [
        {"agreement": 1.0, "form": 1.0, "arithmetic": 1.0},
        {"agreement": 1.0, "form": 1.0, "arithmetic": 1.0},
    ]
    # replay gives the same answers every round: they differ until max_rounds ends the loop
    assert differed["trace"].count("grade:again") == 2
    assert [v["read_scores"] for v in differed["verdicts"][:2]] == [
        {"agreement": 0.0, "form": 1.0, "arithmetic": 1.0},
        {"agreement": 0.0, "form": 1.0, "arithmetic": 1.0},
    ]


MBPP = (
    "Write a function to find the shared elements from the given two lists.\n"
    "Your code should pass these tests:\n\n"
    "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
    "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))\n"
    "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))\n"
)


def test_a_code_judge_runs_the_querys_tests_and_escalates_until_they_pass() -> None:
    # A cascade: the cheap model's code passes one test of three, so the judge escalates to the next model,
    # whose code passes them all; a hostile answer in between is contained and scores 0.
    wrong = "```python\ndef similar_elements(a, b):\n    return (13, 14)\n```"
    hostile = "```python\nimport os\nos.system('echo pwned')\ndef similar_elements(a, b):\n    return ()\n```"
    right = "Here:\n```python\ndef similar_elements(a, b):\n    return tuple(set(a) & set(b))\n```"
    mix = {
        "name": "code-cascade",
        "models": {
            "a": {"provider": "fake", "model": "a", "replies": [wrong], "quality": 0.9},
            "b": {"provider": "fake", "model": "b", "replies": [hostile], "quality": 0.8},
            "c": {"provider": "fake", "model": "c", "replies": [right], "quality": 0.7},
        },
        "gate": {"candidates": ["a", "b", "c"], "top_k": 1},
        "steps": [
            {"kind": "propose", "name": "answer"},
            {
                "kind": "judge",
                "name": "check",
                "self": False,
                "cross": None,
                "read": ["code"],
                "prior_weight": 0,
                "then_select": "next",
                "stop_when": {"score_at_least": 0.99, "max_rounds": 3},
                "otherwise": "answer",
            },
        ],
        "aggregate": {"mode": "best"},
    }
    state = run(mix, MBPP)
    assert state["trace"] == [
        "gate",
        "answer[a]",
        "check:again",
        "answer[b]",
        "check:again",
        "answer[c]",
        "check:stop",
        "aggregate:best",
    ]
    assert [(v["model"], v["read_scores"]) for v in state["verdicts"]] == [
        ("a", {"code": pytest.approx(1 / 3)}),
        ("b", {"code": 0.0}),
        ("c", {"code": 1.0}),
    ]
    assert state["answer"] == right


def test_a_code_judge_has_no_opinion_on_a_query_that_asks_for_no_code() -> None:
    mix = agreeing_mix(["Answer: 4"], ["Answer: 4"], read=["code"])
    state = run(mix)
    assert {v["read_scores"]["code"] for v in state["verdicts"]} == {None}
