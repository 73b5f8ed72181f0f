"""A/B splits: each thread (or user) always lands in the same arm, traffic follows the weights, and the arm
is in every usage row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from langgraph.checkpoint.memory import InMemorySaver

from moai import load_mix
from moai.errors import MixError
from moai.graphs.split import assign_arm
from moai.mix_instructions import load_spec
from moai.mix_instructions.schema import Arm
from moai.usage import UsageStore, monitor_for, resolve_db

POOL = {
    "smol": {"provider": "fake", "model": "smol", "replies": ["smol: {query}"], "quality": 0.6},
    "gemma": {"provider": "fake", "model": "gemma", "replies": ["gemma: {query}"], "quality": 0.4},
}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def arms(tmp_path: Path) -> Path:
    """A folder with two fake mixes: `one` answers with its best model, `both` with a two-model MoA."""
    _write(tmp_path / "one.yaml", {"name": "one", "models": POOL, "steps": [{"kind": "propose", "name": "answer"}]})
    both = {"kind": "propose", "name": "answer", "models": ["smol", "gemma"]}
    _write(tmp_path / "both.yaml", {"name": "both", "models": POOL, "steps": [both], "aggregate": {"mode": "last"}})
    return tmp_path


def _split(folder: Path, arms: dict[str, Any], by: str = "thread") -> Path:
    return _write(folder / "ab.yaml", {"name": "ab", "split": {"by": by, "arms": arms}})


def test_assignment_is_stable_and_follows_the_weights() -> None:
    arms = {"a": Arm(mix="x", weight=4), "b": Arm(mix="x", weight=1)}
    counts = Counter(assign_arm("ab", f"thread-{i}", arms) for i in range(4000))
    assert abs(counts["a"] / 4000 - 0.8) < 0.03
    assert all(assign_arm("ab", f"thread-{i}", arms) == assign_arm("ab", f"thread-{i}", arms) for i in range(50))
    assert Counter(assign_arm("other", f"thread-{i}", arms) for i in range(4000)) != counts  # salted by split


def test_a_thread_stays_in_its_arm_and_its_conversation_goes_on_there(arms: Path) -> None:
    graph = load_mix(_split(arms, {"a": {"mix": "one.yaml"}, "b": {"mix": "both.yaml"}}), checkpointer=InMemorySaver())
    seen: dict[str, set[str]] = {}
    for thread in range(12):
        config = {"configurable": {"thread_id": f"t{thread}"}}
        for turn in ("first", "second"):
            result = graph.invoke({"query": f"{turn} of t{thread}"}, config)
            seen.setdefault(f"t{thread}", set()).add(result["run"]["arm"])
            assert result["trace"][0].startswith("split:") and result["trace"][1] == "gate"
    assert all(len(arms_seen) == 1 for arms_seen in seen.values())
    assert {arm for arms_seen in seen.values() for arm in arms_seen} == {"ab/a", "ab/b"}


def test_the_arm_is_recorded_in_every_usage_row(arms: Path) -> None:
    graph = load_mix(_split(arms, {"a": {"mix": "one.yaml"}, "b": {"mix": "both.yaml"}}, by="user"))
    results = [graph.invoke({"query": "Q"}, {"configurable": {"user_id": f"u{i}"}}) for i in range(10)]
    db = resolve_db()
    assert db is not None
    monitor_for(db).flush()
    store = UsageStore(db)
    ours = {r["run"]["run_id"]: r["run"]["arm"] for r in results}
    runs = [row for row in store.runs() if row["run_id"] in ours]
    calls = [row for row in store.calls() if row["run_id"] in ours]
    store.close()
    assert len(runs) == 10 and all(row["arm"] == ours[row["run_id"]] for row in runs)
    assert calls and all(row["arm"] == ours[row["run_id"]] for row in calls)
    assert {row["mix"] for row in runs} == {"one", "both"}


def test_an_arm_may_pin_a_mix_to_one_of_its_models(arms: Path) -> None:
    graph = load_mix(_split(arms, {"big": {"mix": "one.yaml"}, "small": {"mix": "one.yaml", "model": "gemma"}}))
    used = {r["run"]["arm"]: r["models_used"] for r in (graph.invoke({"query": f"q{i}"}) for i in range(12))}
    assert used == {"ab/big": ["smol"], "ab/small": ["gemma"]}


@pytest.mark.parametrize(
    ("arms_field", "field", "words"),
    [
        ({"a": {"mix": "nope.yaml"}, "b": {"mix": "one.yaml"}}, "split.arms.a.mix", ("bundled mixes", "route")),
        (
            {"a": {"mix": "one.yaml", "model": "gpt"}, "b": {"mix": "one.yaml"}},
            "split.arms.a.model",
            ("valid choices: gemma, smol",),
        ),
        ({"a": {"mix": "ab.yaml"}, "b": {"mix": "one.yaml"}}, "split.arms.a.mix", ("is a split itself",)),
        ({"a": {"mix": "one.yaml"}}, "split.arms", ("at least 2",)),
        ({"a": {"mix": "one.yaml", "weight": 0}, "b": {"mix": "one.yaml"}}, "split.arms.a.weight", ("greater than 0",)),
        (
            {"a": {"mix": "one.yaml", "wieght": 1}, "b": {"mix": "one.yaml"}},
            "split.arms.a.wieght",
            ("did you mean 'weight'",),
        ),
        ({"split": {"mix": "one.yaml"}, "b": {"mix": "one.yaml"}}, "split.arms.split", ("assigns the arms",)),
    ],
)
def test_a_wrong_split_names_the_file_the_field_and_the_choices(
    arms: Path, arms_field: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    path = _split(arms, arms_field)
    with pytest.raises(MixError) as err:
        load_mix(path)
    assert (err.value.source, err.value.field) == (str(path), field)
    assert all(word in err.value.message for word in words), err.value.message


def test_a_split_is_not_a_mix(arms: Path) -> None:
    with pytest.raises(MixError, match="an A/B split of mixes, not a mix"):
        load_spec(_split(arms, {"a": {"mix": "one.yaml"}, "b": {"mix": "both.yaml"}}))
