"""Two `moai serve` replicas on one real PostgreSQL: every request answered or refused, no usage row lost,
and a key's daily limit held across both.

The test starts a private PostgreSQL on 127.0.0.1 and two `moai serve --workers 1` processes on free
loopback ports, both with the same usage store (`MOAI_USAGE_DB`, the PostgreSQL URL), keys file and
scripted mix (provider `fake`, 20 ms a call: no model files). 200 requests go at once, alternately to
either replica, half with a key without limits and half with a key of $0.205 a day.

What the design guarantees (`KeyGuard.admit`): a run is let in only if the key's spend (its calls' cost
today, plus what each of its runs under way may still cost: its hold, the mix's `budget_usd`, less what it
has cost so far) plus the new run's hold is within the limit, in one transaction under the key's advisory
lock; the hold is settled after the run's call rows are written. Since `call_model` never lets a run cost
more than its budget, the key's recorded spend never exceeds its daily limit, however many runs are in
flight on however many replicas. With this mix (3 calls, $0.009 a run, budget $0.011), k runs of the key
are let in with 0.009 k <= 0.205 (k <= 22), and a refusal means 0.011 k + 0.011 > 0.205 (k >= 18).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _postgres import postgres_bin, postgres_server
from _serve import Servers

from moai.serve.keys import hash_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)"),
]

PANEL = """
name: panel
description: Two scripted proposers and a synthesising aggregator; $0.009 a run, within a budget of $0.011.
models:
  a: {provider: fake, model: a, quality: 0.6, max_tokens: 4, delay_s: 0.02,
      price: {input_per_mtok: 0.0, output_per_mtok: 1000.0}, replies: ["alpha says Paris"]}
  b: {provider: fake, model: b, quality: 0.5, max_tokens: 4, delay_s: 0.02,
      price: {input_per_mtok: 0.0, output_per_mtok: 1000.0}, replies: ["beta says Paris"]}
gate: {top_k: 2, scorer: priors, objective: {budget_usd: 0.011}}
steps:
  - {kind: propose, name: draft}
aggregate: {mode: synthesize, model: a}
"""
CALLS_PER_RUN = 3
RUN_USD = 0.009
HOLD_USD = 0.011
DAILY_USD = 0.205
REQUESTS = 200
FREE, CAPPED = "free-key-" + "f" * 30, "capped-key-" + "c" * 30
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Servers]:
    """Start PostgreSQL and two replicas on it; stop them all, whatever the test did."""
    (tmp_path / "mixes").mkdir()
    (tmp_path / "mixes" / "panel.yaml").write_text(PANEL)
    keys = {"free": {"sha256": hash_key(FREE)}, "capped": {"sha256": hash_key(CAPPED), "daily_usd": DAILY_USD}}
    (tmp_path / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}))
    with postgres_server() as url:
        replicas = Servers(url)
        try:
            for i in range(2):
                args = ["--workers", "1", "--mixes", str(tmp_path / "mixes"), "--keys", str(tmp_path / "keys.yaml")]
                replicas.start(args, tmp_path / f"replica-{i}.log")
            replicas.wait_healthy(tries=900)  # about 90 s for both to import and bind on a loaded machine
            yield replicas
        finally:
            replicas.stop()  # before PostgreSQL stops, so the replicas' last rows reach it


def _clear_of_midnight() -> None:
    """Wait out the last two minutes of a UTC day: the daily limit starts afresh at 00:00."""
    left = 86_400 - time.time() % 86_400
    if left < 120:
        time.sleep(left + 1)


async def _ask_all(bases: list[str]) -> list[tuple[str, httpx.Response]]:
    """Send REQUESTS requests at once, alternately to each replica, half of them with each key."""
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def ask(i: int) -> tuple[str, httpx.Response]:
            key = (FREE, CAPPED)[i % 2]
            base = bases[(i // 2) % 2]  # each key's requests split between both replicas
            body = {"model": "panel", "messages": QUESTION, "user": f"user-{i}"}
            reply = await client.post(
                f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            return ("free", "capped")[i % 2], reply

        return await asyncio.gather(*(ask(i) for i in range(REQUESTS)))


def _rows(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        runs = conn.execute("SELECT run_id, key_id, status, cost_usd FROM runs").fetchall()
        calls = conn.execute("SELECT run_id, key_id, status, cost_usd FROM calls").fetchall()
        holds = conn.execute("SELECT COUNT(*) AS n FROM key_holds").fetchone()
    return runs, calls, int(holds["n"]) if holds else -1


def test_two_replicas_on_one_postgres_answer_all_lose_no_row_and_hold_a_keys_limit(replicas: Servers) -> None:
    _clear_of_midnight()
    replies = asyncio.run(_ask_all(replicas.bases))
    # Both drained and flushed their usage rows (uvicorn ends by re-raising the SIGTERM it handled).
    assert set(replicas.stop()) <= {0, -signal.SIGTERM}, replicas.log()

    answered: dict[str, tuple[str, float]] = {}  # run id -> (key, cost the reply gave)
    for key, reply in replies:
        if reply.status_code == 200:
            answered[reply.headers["x-moai-run-id"]] = (key, float(reply.headers["x-moai-cost-usd"]))
            assert reply.json()["choices"][0]["message"]["content"], reply.text
            continue
        # Only the capped key is ever refused, and only for its daily limit, in OpenAI's error shape.
        assert key == "capped" and reply.status_code == 429, (key, reply.status_code, reply.text)
        error = reply.json()["error"]
        assert error["code"] == "daily_budget_exceeded" and "'capped'" in error["message"], error
        assert error["type"] and int(reply.headers["retry-after"]) >= 1
    assert len(answered) == sum(reply.status_code == 200 for _, reply in replies)  # one run id a reply
    free = [run for run, (key, _) in answered.items() if key == "free"]
    capped = [run for run, (key, _) in answered.items() if key == "capped"]
    assert len(free) == REQUESTS // 2  # the key without limits is never refused
    # Within the limit, and refused only once the holds of the runs let in left no room for another.
    assert int(DAILY_USD // HOLD_USD) <= len(capped) <= int(DAILY_USD // RUN_USD), len(capped)

    runs, calls, holds = _rows(replicas.db)
    # No row lost: a run row for each answered request, and each of its calls, with its key.
    assert sorted(row["run_id"] for row in runs) == sorted(answered)
    assert len(calls) == CALLS_PER_RUN * len(answered)
    assert all(row["status"] == "ok" for row in [*runs, *calls])
    for row in [*runs, *calls]:
        assert row["key_id"] == answered[row["run_id"]][0], row
    for run in answered:
        mine = [row for row in calls if row["run_id"] == run]
        assert len(mine) == CALLS_PER_RUN and sum(row["cost_usd"] for row in mine) == pytest.approx(RUN_USD)
        assert answered[run][1] == pytest.approx(RUN_USD)
    assert holds == 0  # every run's hold was settled

    # The capped key's recorded spend never exceeds its daily limit, across both replicas.
    spent = sum(row["cost_usd"] for row in calls if row["key_id"] == "capped")
    assert spent == pytest.approx(RUN_USD * len(capped)) and spent <= DAILY_USD
