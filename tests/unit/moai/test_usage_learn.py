"""The usage store as online learning's log: old databases gain its tables, rewards follow each mix's
sources, and updates are appended, never overwritten."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from moai.mix_instructions import MixSpec
from moai.usage import UsageStore


def _context(run_id: str, model: str = "a", sources: tuple[str, ...] = ("feedback",)) -> dict[str, object]:
    return {
        "run_id": run_id,
        "ts": 1.0,
        "mix": "m",
        "model": model,
        "prior": 0.4,
        "sources": list(sources),
        "x": [0.6, 0.8],
    }


def test_a_database_written_before_online_learning_keeps_working(tmp_path: Path) -> None:
    """A database with only the earlier tables (and a run in it) opens, gains the new ones, and learns nothing old."""
    db = tmp_path / "old.db"
    # An earlier release's database: today's tables less the learning ones (dropped), with a run in it.
    UsageStore(str(db)).write([("run", {"run_id": "old", "ts": 1.0, "mix": "m", "query": "hello", "status": "ok"})])
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE learn_contexts")
        conn.execute("DROP TABLE learn_updates")
    store = UsageStore(str(db))
    try:
        assert [r["run_id"] for r in store.runs()] == ["old"]
        store.add_feedback("old", 1.0)
        assert store.add_reward("old", 1.0) == 0  # the run was not routed by a learning gate
        assert store.learn_updates("m") == []
    finally:
        store.close()
    tables = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"learn_contexts", "learn_updates"} <= tables


def test_rewards_follow_the_sources_the_mix_learns_from(tmp_path: Path) -> None:
    store = UsageStore(str(tmp_path / "u.db"))
    try:
        store.write([("learn", _context("r1")), ("learn", _context("r2", sources=("judge",)))])
        assert store.add_reward("r1", 0.9, "feedback") == 1
        assert store.add_reward("r2", 0.9, "feedback") == 0
        store.write([("reward", {"run_id": "r2", "model": "a", "reward": 0.3, "source": "judge"})])
        assert store.add_reward("r1", 7.0) == 0  # out of [0, 1]: no update
        updates = store.learn_updates("m")
        assert [(model, prior, reward) for _, model, _, prior, reward in updates] == [
            ("a", pytest.approx(0.4), 0.9),
            ("a", pytest.approx(0.4), 0.3),
        ]
        assert updates[0][2] == pytest.approx([0.6, 0.8])
        # Increments: each reader asks for what came after its last id.
        assert store.learn_updates("m", after=updates[0][0]) == updates[1:]
        assert store.learn_updates("other") == []
    finally:
        store.close()


def test_a_hostile_embedding_is_not_stored(tmp_path: Path) -> None:
    store = UsageStore(str(tmp_path / "u.db"))
    try:
        store.write([("learn", _context("r1") | {"x": [float("nan"), 1.0]}), ("learn", _context("r2") | {"x": []})])
        assert store.add_reward("r1", 1.0) == store.add_reward("r2", 1.0) == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    "learn",
    [{"explore": 0.6}, {"explore": -0.1}, {"prior_strength": 0}, {"sources": []}, {"sources": ["votes"]}, {"scale": 2}],
)
def test_gate_learn_is_bounded(learn: dict[str, object]) -> None:
    mix = {
        "name": "m",
        "models": {"a": {"provider": "fake", "model": "a"}},
        "gate": {"learn": learn},
        "steps": [{"kind": "propose", "name": "answer"}],
    }
    with pytest.raises(ValueError, match="learn"):
        MixSpec.model_validate(mix)
