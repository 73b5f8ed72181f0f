"""Recorded answers: `usage.record_answers`, `moai usage export --responses`, and replaying them (shadow evaluation)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from moai import load_mix
from moai.cli import main
from moai.scorer.data.responses import responses_index
from moai.usage import UsageStore, monitor_for, record_feedback
from moai.usage.store import CALL_COLUMNS, RUN_COLUMNS

LIVE = """
name: live
usage: {{record_answers: {record}}}
models:
  a: {{provider: fake, model: a, privacy: local, quality: 0.7, replies: ["{a}"],
      price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  b: {{provider: fake, model: b, privacy: local, quality: 0.6, replies: ["{b}"],
      price: {{input_per_mtok: 3, output_per_mtok: 5}}}}
gate: {{top_k: 2}}
steps:
  - {{kind: propose, name: answer}}
aggregate: {{mode: last}}
"""

REPLAY = """
name: shadow
usage: {record_answers: true}
models:
  a: {provider: replay, model: a, quality: 0.7, responses: answers.jsonl}
  b: {provider: replay, model: b, quality: 0.6, responses: answers.jsonl}
gate: {top_k: 2}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: last}
"""

QUERIES = ["What is the capital of France?", "How much is 2 + 2?"]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    return path


def _live(tmp_path: Path, *, record: bool = True) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(LIVE.format(record=str(record).lower(), a="Paris, of course.", b="It is Paris."), encoding="utf-8")
    return path


def _calls(db: str) -> list[dict[str, Any]]:
    monitor_for(db).flush()
    store = UsageStore(db)
    try:
        return store.calls()
    finally:
        store.close()


def _answered(db: str) -> set[tuple[str, str, str, float, int, int]]:
    """Return (query, model, answer, cost, tokens in, tokens out) of every recorded answer in `db`."""
    calls = _calls(db)
    store = UsageStore(db)
    try:
        queries = {run["run_id"]: run["query"] for run in store.runs()}
    finally:
        store.close()
    return {
        (queries[c["run_id"]], c["model"], c["response"], c["cost_usd"], c["tokens_in"], c["tokens_out"])
        for c in calls
        if c["response"] is not None
    }


def test_answers_are_recorded_only_when_the_mix_asks(tmp_path: Path, db: str) -> None:
    load_mix(_live(tmp_path, record=False)).invoke({"query": QUERIES[0]})
    assert [c["response"] for c in _calls(db)] == [None, None]
    load_mix(_live(tmp_path)).invoke({"query": QUERIES[0]})
    assert sorted(c["response"] for c in _calls(db) if c["response"]) == ["It is Paris.", "Paris, of course."]


def test_the_answer_to_a_sensitive_query_is_never_recorded_nor_exported(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = load_mix(_live(tmp_path))
    graph.invoke({"query": "My SSN is 123-45-6789: is Paris nice?"})  # found by a detector
    graph.invoke({"query": QUERIES[0], "sensitive": True})  # flagged by the caller
    calls = _calls(db)
    assert calls and all(c["status"] == "ok" and c["response"] is None for c in calls)
    out = tmp_path / "answers.jsonl"
    assert main(["usage", "export", "--responses", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == ""
    assert "record_answers" in capsys.readouterr().err


def test_export_responses_writes_the_replay_format(tmp_path: Path, db: str) -> None:
    graph = load_mix(_live(tmp_path))
    first = graph.invoke({"query": QUERIES[0]})
    graph.invoke({"query": QUERIES[1]})
    record_feedback(first["run"]["run_id"], 0.8, db=db)
    out = tmp_path / "answers.jsonl"
    assert main(["usage", "export", "--responses", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4
    assert {(line["prompt"], line["model"], line["response"]) for line in lines} == {
        (q, m, r) for q in QUERIES for m, r in (("a", "Paris, of course."), ("b", "It is Paris."))
    }
    scores = {line["id"]: line["score"] for line in lines}
    assert scores == {first["run"]["run_id"]: 0.8, **{k: None for k in scores if k != first["run"]["run_id"]}}
    assert all(line["task"] == "live" and line["cost"] > 0 for line in lines)
    assert set(responses_index(out).models) == {"a", "b"}  # the replay reader takes it


def test_a_recorded_mix_replays_with_the_same_answers_and_costs(
    tmp_path: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = load_mix(_live(tmp_path))
    live_answers = [graph.invoke({"query": q})["answer"] for q in QUERIES]
    assert main(["usage", "export", "--responses", "--out", str(tmp_path / "answers.jsonl")]) == 0
    shadow_db = str(tmp_path / "shadow.db")
    monkeypatch.setenv("MOAI_USAGE_DB", shadow_db)
    shadow_path = tmp_path / "shadow.yaml"
    shadow_path.write_text(REPLAY, encoding="utf-8")
    shadow = load_mix(shadow_path)
    assert [shadow.invoke({"query": q})["answer"] for q in QUERIES] == live_answers
    live = _answered(db)
    assert len(live) == 4 and {row[0] for row in live} == set(QUERIES)
    assert _answered(shadow_db) == live  # the same answers, at the same costs and token counts


def test_a_database_written_before_responses_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(f"CREATE TABLE runs (run_id TEXT PRIMARY KEY, {', '.join(RUN_COLUMNS[1:])})")
    calls = ", ".join(c for c in CALL_COLUMNS if c != "response")
    old.execute(f"CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, {calls})")
    old.execute("INSERT INTO calls (run_id, ts, mix, model, status, cost_usd) VALUES ('old', 1.0, 'm', 'a', 'ok', 0.5)")
    old.commit()
    old.close()
    store = UsageStore(str(path))
    try:
        [call] = store.calls()
        assert call["response"] is None and call["cost_usd"] == 0.5
        store.write([("call", {"run_id": "new", "ts": 2.0, "mix": "m", "model": "a", "response": "hi"})])
        assert [c["response"] for c in store.calls()] == [None, "hi"]
    finally:
        store.close()
    UsageStore(str(path)).close()  # opened again: nothing left to add
