"""The usage monitor against a real PostgreSQL server on 127.0.0.1 (installed by `.ci/run`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from _postgres import postgres_bin, postgres_server
from fakes import fake_bundled

from moai import build_mix
from moai.usage import UsageStore, monitor_for, record_feedback

pytestmark = pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)")


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with postgres_server() as url:
        monkeypatch.setenv("MOAI_USAGE_DB", url)
        yield url


def _store(url: str) -> UsageStore:
    monitor_for(url).flush()
    return UsageStore(url)


def test_concurrent_runs_land_in_postgres_with_no_record_lost(postgres: str) -> None:
    graph = build_mix(fake_bundled("moa", {})).compile()

    async def many() -> list[dict[str, object]]:
        return await asyncio.gather(*(graph.ainvoke({"query": f"question {i}"}) for i in range(30)))

    results = asyncio.run(many())
    store = _store(postgres)
    runs = {row["run_id"]: row for row in store.runs()}
    assert set(runs) == {r["run"]["run_id"] for r in results}  # type: ignore[index]
    assert all(row["status"] == "ok" and row["answer"] for row in runs.values())
    assert len(store.calls()) == sum(len(r["calls"]) for r in results)  # type: ignore[arg-type]
    record_feedback(next(iter(runs)), 0.75, "good", db=postgres)
    assert [(f["score"], f["comment"]) for f in store.feedback()] == [(0.75, "good")]
    store.close()


def test_a_run_completes_when_postgres_goes_down_and_the_loss_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_server() as url:
        monkeypatch.setenv("MOAI_USAGE_DB", url)
        graph = build_mix(fake_bundled("route", {})).compile()
        assert graph.invoke({"query": "before"})["answer"]
        monitor_for(url).flush()
    lost = monitor_for(url).lost
    with caplog.at_level(logging.WARNING, logger="moai.usage"):
        result = graph.invoke({"query": "after the store went down"})
        monitor_for(url).flush()
    assert result["answer"]
    assert monitor_for(url).lost > lost
    assert "rows lost" in caplog.text
