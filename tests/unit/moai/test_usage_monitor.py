"""The usage monitor on SQLite: every call lands, concurrent runs lose nothing, a broken store breaks no run."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fakes import fake_bundled

from moai import build_mix
from moai.mix_instructions.load import parse_spec
from moai.usage import UsageStore, monitor_for, record_feedback, resolve_db


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    return path


def _rows(db: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    monitor_for(db).flush()
    store = UsageStore(db)
    try:
        return store.runs(), store.calls()
    finally:
        store.close()


def test_every_call_and_the_run_land_in_sqlite_in_wal_mode(db: str) -> None:
    spec = fake_bundled("moa", {"smol": ["!fail 503", "S"], "gemma": ["G"]})
    spec.models["smol"] = spec.models["smol"].model_copy(update={"fallbacks": ["gemma"]})
    result = build_mix(spec).compile().invoke({"query": "Q"}, {"configurable": {"thread_id": "t-1"}})
    runs, calls = _rows(db)
    assert [r["run_id"] for r in runs] == [result["run"]["run_id"]]
    run = runs[0]
    assert (run["mix"], run["thread_id"], run["query"], run["status"]) == ("moa", "t-1", "Q", "ok")
    assert run["answer"] == result["answer"] and run["models_used"] == result["models_used"]
    assert run["selected"] == ["smol"] and run["scores"].keys() == {"smol", "gemma"}
    recorded = sorted((c["node"], c["model"], c["status"], str(c["fallback_for"])) for c in calls)
    assert recorded == sorted((c["node"], c["model"], c["status"], str(c["fallback_for"])) for c in result["calls"])
    assert ("layer1", "gemma", "ok", "smol") in recorded  # the fallback taken is in the row
    assert all(c["run_id"] == run["run_id"] and c["thread_id"] == "t-1" for c in calls)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_runs_lose_no_record(db: str) -> None:
    graph = build_mix(fake_bundled("moa", {})).compile()

    async def many() -> list[dict[str, Any]]:
        return await asyncio.gather(*(graph.ainvoke({"query": f"q{i}"}) for i in range(40)))

    results = asyncio.run(many())
    runs, calls = _rows(db)
    assert len(runs) == 40 and all(r["status"] == "ok" for r in runs)
    assert len(calls) == sum(len(r["calls"]) for r in results)


def test_a_run_that_no_model_answers_is_recorded_as_an_error(db: str) -> None:
    graph = build_mix(fake_bundled("route", {"smol": ["!fail 500"], "gemma": ["!fail 500"]})).compile()
    with pytest.raises(Exception, match="no model answered"):
        graph.invoke({"query": "Q"})
    runs, calls = _rows(db)
    assert runs[0]["status"] == "error" and "no model answered" in runs[0]["error"]
    assert calls and all(c["status"] == "error" for c in calls)


def test_a_broken_store_breaks_no_run_and_the_loss_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    broken = str(tmp_path / "file" / "usage.db")  # its parent is a file: SQLite cannot open it
    monkeypatch.setenv("MOAI_USAGE_DB", broken)
    with caplog.at_level(logging.WARNING, logger="moai.usage"):
        result = build_mix(fake_bundled("route", {})).compile().invoke({"query": "Q"})
        monitor_for(broken).flush()
    assert result["answer"]
    assert monitor_for(broken).lost > 0 and "rows lost" in caplog.text


def test_feedback_joins_a_recorded_run_and_an_unknown_run_is_an_error(db: str) -> None:
    result = build_mix(fake_bundled("route", {})).compile().invoke({"query": "Q"})
    record_feedback(result["run"]["run_id"], 1.0, "right")
    with pytest.raises(KeyError, match="no run 'nope'"):
        record_feedback("nope", 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        record_feedback(result["run"]["run_id"], 7)
    store = UsageStore(db)
    assert [(f["run_id"], f["score"]) for f in store.feedback()] == [(result["run"]["run_id"], 1.0)]
    store.close()


def test_the_environment_overrides_the_configured_path_and_off_turns_recording_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MOAI_USAGE_DB")
    assert resolve_db("/x/usage.db") == "/x/usage.db"
    assert resolve_db().endswith("moai/usage.db")  # type: ignore[union-attr]
    monkeypatch.setenv("MOAI_USAGE_DB", "postgresql://u@127.0.0.1/db")
    assert resolve_db("/x/usage.db") == "postgresql://u@127.0.0.1/db"
    monkeypatch.setenv("MOAI_USAGE_DB", "off")
    assert resolve_db("/x/usage.db") is None


def _private_mix(**sensitive: Any) -> Any:
    """A local model and a third-party one; queries the rule finds sensitive stay with the local one."""
    models = {
        "home": {"provider": "fake", "model": "h", "privacy": "local", "replies": ["Form 1040 for 123-45-6789"]},
        "cloud": {"provider": "fake", "model": "c", "privacy": "third_party", "quality": 0.9, "replies": ["C"]},
    }
    gate = {"constraints": {"sensitive": sensitive}}
    return parse_spec({"name": "p", "models": models, "gate": gate, "steps": [{"kind": "propose", "name": "answer"}]})


SSN_QUERY = "My SSN is 123-45-6789 and my mail jane@example.com: which form?"


@pytest.mark.parametrize(
    ("sensitive", "flagged", "query", "answer"),
    [
        ({}, False, "My SSN is [ssn] and my mail [email]: which form?", "[sensitive answer: 25 chars]"),
        ({}, True, f"[sensitive query: {len(SSN_QUERY)} chars]", "[sensitive answer: 25 chars]"),
        (
            {"patterns": ["(?i)which form"]},
            False,
            "My SSN is [ssn] and my mail [email]: [redacted]?",
            "[sensitive answer: 25 chars]",
        ),
        ({"store": "none"}, False, "[sensitive query]", "[sensitive answer]"),
        ({"store": "none"}, True, "[sensitive query]", "[sensitive answer]"),
    ],
)
def test_a_sensitive_query_and_its_answer_are_stored_redacted_or_not_at_all(
    db: str, sensitive: dict[str, Any], flagged: bool, query: str, answer: str
) -> None:
    result = build_mix(_private_mix(**sensitive)).compile().invoke({"query": SSN_QUERY, "sensitive": flagged})
    assert result["models_used"] == ["home"] and "123-45-6789" in result["answer"]  # the caller gets it all
    runs, _ = _rows(db)
    assert runs[0]["query"] == query and runs[0]["answer"] == answer
    stored = sqlite3.connect(db).execute("SELECT * FROM runs").fetchall()
    assert not any("123-45-6789" in str(value) or "jane@" in str(value) for value in stored[0])


def test_a_refused_sensitive_query_is_stored_redacted(db: str) -> None:
    spec = _private_mix(allow_privacy=[])  # no tier may see a sensitive query: every model is ruled out
    with pytest.raises(Exception, match="no model may answer this query"):
        build_mix(spec).compile().invoke({"query": SSN_QUERY})
    runs, calls = _rows(db)
    assert (runs[0]["status"], runs[0]["query"]) == ("error", "My SSN is [ssn] and my mail [email]: which form?")
    assert calls == []


def test_an_ordinary_query_and_its_answer_are_stored_as_they_are(db: str) -> None:
    build_mix(_private_mix()).compile().invoke({"query": "Which form for a W-2 job in 2024?"})
    runs, _ = _rows(db)
    assert (runs[0]["query"], runs[0]["answer"]) == ("Which form for a W-2 job in 2024?", "C")
