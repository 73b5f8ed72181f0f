"""`moai serve --keys`: bearer keys, their daily spend and rate limits through the usage store, `moai keys add`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from moai.cli import main
from moai.errors import MixError
from moai.serve import create_app
from moai.serve.keys import KeyGuard, hash_key, load_keys
from moai.usage import UsageStore, monitor_for
from moai.usage.store import CALL_COLUMNS, RUN_COLUMNS, Refusal

PRICED = """
name: priced
description: One scripted model at a price, so runs cost money.
models:
  mini: {provider: fake, model: mini, quality: 0.6, price: {input_per_mtok: 1000.0, output_per_mtok: 2000.0},
         replies: ["Paris is the capital."]}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
ASK = {"model": "priced", "messages": [{"role": "user", "content": "What is the capital of France?"}]}


class Clock:
    """A clock the test moves: the rate limit counts with it, not with the wall's.

    It starts at the time it is made, as the usage rows' times do, so that the day's spend is today's.
    """

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    return path


@pytest.fixture
def mixes(tmp_path: Path) -> Path:
    folder = tmp_path / "mixes"
    folder.mkdir()
    (folder / "priced.yaml").write_text(PRICED)
    return folder


def keys_file(tmp_path: Path, **limits: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """Write a keys file with one key per id (and its limits); return it and the plain keys."""
    plain = {key_id: f"secret-of-{key_id}-" + "x" * 20 for key_id in limits}
    entries = {key_id: {"sha256": hash_key(plain[key_id]), **extra} for key_id, extra in limits.items()}
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path, plain


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moai")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rows(db: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    assert monitor_for(db).flush()
    store = UsageStore(db)
    try:
        return store.runs(), store.calls()
    finally:
        store.close()


@pytest.fixture
async def keyed(tmp_path: Path, mixes: Path, db: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    path, plain = keys_file(tmp_path, free={}, capped={"daily_usd": 0.001}, slow={"rpm": 2})
    async with client_of(create_app(mixes, keys=path, clock=Clock())) as client:
        yield client, plain


async def test_a_request_without_a_known_key_is_401_in_openais_shape(
    keyed: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, plain = keyed
    for headers in ({}, bearer("not-a-key"), {"Authorization": f"Basic {plain['free']}"}, bearer("x" * 10_000)):
        reply = await client.post("/v1/chat/completions", json=ASK, headers=headers)
        assert reply.status_code == 401, headers
        error = reply.json()["error"]
        assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
        assert reply.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/models")).status_code == 401
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.post("/v1/feedback", json={"run_id": "r", "score": 1})).status_code == 401
    assert (await client.get("/health")).status_code == 200  # what load balancers probe, without a key
    assert (await client.get("/v1/models", headers=bearer(plain["free"]))).status_code == 200


async def test_the_keys_id_is_in_every_usage_row_of_its_run(
    keyed: tuple[httpx.AsyncClient, dict[str, str]], db: str
) -> None:
    client, plain = keyed
    reply = await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["free"]))
    assert reply.status_code == 200, reply.text
    run_id = reply.headers["x-moai-run-id"]
    runs, calls = rows(db)
    [run] = [row for row in runs if row["run_id"] == run_id]
    mine = [row for row in calls if row["run_id"] == run_id]
    assert run["key_id"] == "free" and mine and all(row["key_id"] == "free" for row in mine)
    assert plain["free"] not in json.dumps([runs, calls])  # the key itself is never recorded


async def test_a_key_over_its_daily_spend_gets_429_with_the_reason(
    keyed: tuple[httpx.AsyncClient, dict[str, str]], db: str
) -> None:
    client, plain = keyed
    first = await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["capped"]))
    assert first.status_code == 200 and float(first.headers["x-moai-cost-usd"]) > 0.001
    assert monitor_for(db).flush()  # the spend is read from the store: once its rows are there
    second = await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["capped"]))
    assert second.status_code == 429
    error = second.json()["error"]
    assert error["code"] == "daily_budget_exceeded" and "'capped'" in error["message"] and "$0.001" in error["message"]
    assert int(second.headers["retry-after"]) >= 1
    other = await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["free"]))
    assert other.status_code == 200  # the limit is the key's own


async def test_a_key_over_its_rate_gets_429_with_retry_after(tmp_path: Path, mixes: Path, db: str) -> None:
    path, plain = keys_file(tmp_path, slow={"rpm": 2})
    clock = Clock()
    async with client_of(create_app(mixes, keys=path, clock=clock)) as client:
        for _ in range(2):
            assert (
                await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["slow"]))
            ).status_code == 200
        clock.now += 20
        refused = await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["slow"]))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "2 requests a minute" in refused.text
        assert refused.headers["retry-after"] == "40"  # the first request leaves the window 60 s after it came
        clock.now += 41
        assert (await client.post("/v1/chat/completions", json=ASK, headers=bearer(plain["slow"]))).status_code == 200


async def test_two_workers_on_one_store_share_a_keys_limits(tmp_path: Path, mixes: Path, db: str) -> None:
    """Two apps on one SQLite file stand in for two workers (or replicas on one PostgreSQL)."""
    path, plain = keys_file(tmp_path, slow={"rpm": 3}, capped={"daily_usd": 0.001})
    clock = Clock()
    async with (
        client_of(create_app(mixes, keys=path, clock=clock)) as one,
        client_of(create_app(mixes, keys=path, clock=clock)) as two,
    ):
        codes = [
            (await worker.post("/v1/chat/completions", json=ASK, headers=bearer(plain["slow"]))).status_code
            for worker in (one, two, one, two)
        ]
        assert codes == [200, 200, 200, 429]
        assert (await one.post("/v1/chat/completions", json=ASK, headers=bearer(plain["capped"]))).status_code == 200
        assert monitor_for(db).flush()
        refused = await two.post("/v1/chat/completions", json=ASK, headers=bearer(plain["capped"]))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "daily_budget_exceeded"


async def test_without_keys_nothing_is_asked_and_rows_have_no_key(mixes: Path, db: str) -> None:
    async with client_of(create_app(mixes)) as client:
        reply = await client.post("/v1/chat/completions", json=ASK)
        assert reply.status_code == 200
    runs, calls = rows(db)
    assert [row["key_id"] for row in runs] == [None] and all(row["key_id"] is None for row in calls)


def test_the_spend_of_a_day_counts_from_0000_utc(db: str) -> None:
    store = UsageStore(db)
    try:
        day = 1_800_000_000.0 - 1_800_000_000.0 % 86_400
        call = {"mix": "m", "node": "n", "model": "a", "status": "ok", "key_id": "k"}
        store.write([("call", call | {"run_id": "1", "ts": day - 1, "cost_usd": 5.0})])
        store.write([("call", call | {"run_id": "2", "ts": day + 1, "cost_usd": 0.25})])
        store.write([("call", call | {"run_id": "3", "ts": day + 2, "cost_usd": 1.0, "key_id": "other"})])
        assert store.key_spend("k", day) == 0.25 and store.key_spend("nobody", day) == 0.0
    finally:
        store.close()


def test_a_database_written_before_keys_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    runs = ", ".join(c for c in RUN_COLUMNS[1:] if c != "key_id")
    calls = ", ".join(c for c in CALL_COLUMNS if c != "key_id")
    old.execute(f"CREATE TABLE runs (run_id TEXT PRIMARY KEY, {runs})")
    old.execute(f"CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, {calls})")
    old.execute("INSERT INTO runs (run_id, ts, mix, status, cost_usd) VALUES ('old', 1.0, 'm', 'ok', 0.5)")
    old.execute("INSERT INTO calls (run_id, ts, mix, model, cost_usd) VALUES ('old', 1.0, 'm', 'a', 0.5)")
    old.commit()
    old.close()
    store = UsageStore(str(path))
    try:
        [run] = store.runs()
        [call] = store.calls()
        assert run["run_id"] == "old" and run["key_id"] is None and run["cost_usd"] == 0.5
        assert call["key_id"] is None and call["cost_usd"] == 0.5
        store.write([("call", {"run_id": "new", "ts": 2.0, "mix": "m", "model": "a", "cost_usd": 1.0, "key_id": "k"})])
        assert store.key_spend("k", 0.0) == 1.0
        assert store.admit("k", 1, 60.0, now=10.0) is None and store.admit("k", 1, 60.0, now=20.0) == 50.0
    finally:
        store.close()
    UsageStore(str(path)).close()  # opened again: nothing left to add


def test_moai_keys_add_prints_the_key_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.yaml"
    assert main(["keys", "add", "--id", "team-a", "--daily-usd", "5", "--rpm", "60", "--file", str(path)]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["keys", "add", "--id", "ci", "--file", str(path)]) == 0
    second = capsys.readouterr().out.strip()
    assert len(first) >= 43 and first != second
    text = path.read_text()
    assert first not in text and second not in text and hash_key(first) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_keys(path)
    assert keys.ids == ["team-a", "ci"]
    found = keys.find(first)
    assert found is not None and found.id == "team-a" and found.daily_usd == 5.0 and found.rpm == 60
    assert main(["keys", "add", "--id", "ci", "--file", str(path)]) == 2  # the id is taken
    assert "keys.ci" in capsys.readouterr().err
    assert main(["keys", "add", "--id", "x", "--rpm", "0", "--file", str(path)]) == 2
    assert main(["keys", "add", "--id", "x", "--daily-usd", "nan", "--file", str(path)]) == 2
    as_json = tmp_path / "keys.json"
    assert main(["keys", "add", "--id", "j", "--file", str(as_json)]) == 0
    assert set(json.loads(as_json.read_text())["keys"]) == {"j"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("keys: {a: {sha256: abc}}", "keys.a.sha256"),
        (f"keys: {{a: {{sha256: {'a' * 64}, daily_usd: .nan}}}}", "keys.a.daily_usd"),
        (f"keys: {{a: {{sha256: {'a' * 64}, daily_usd: -1}}}}", "keys.a.daily_usd"),
        (f"keys: {{a: {{sha256: {'a' * 64}, rpm: 1.5}}}}", "keys.a.rpm"),
        (f"keys: {{a: {{sha256: {'a' * 64}, rpm: 0}}}}", "keys.a.rpm"),
        (f"keys: {{a: {{sha256: {'a' * 64}, dailyusd: 1}}}}", "keys.a.dailyusd"),
        (f"keys: {{a: {{sha256: {'a' * 64}}}, b: {{sha256: {'a' * 64}}}}}", "keys.b.sha256"),
        (f"keys: {{'a b': {{sha256: {'a' * 64}}}}}", "keys"),
        (f"keys: {{a: {{sha256: {'a' * 64}}}, a: {{sha256: {'b' * 64}}}}}", "keys.a"),
        ("[1, 2]", ""),
        ("keys: [a]", "keys"),
    ],
)
def test_a_careless_keys_file_exits_2_naming_the_file_and_field(
    tmp_path: Path, text: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(MixError) as err:
        load_keys(path)
    assert err.value.source == str(path) and err.value.field == field
    assert main(["serve", "--keys", str(path), "--port", "1"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and str(path) in line and "Traceback" not in line


def test_limits_with_the_usage_store_off_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_USAGE_DB", "off")
    path, _ = keys_file(tmp_path, capped={"daily_usd": 1.0})
    with pytest.raises(MixError, match="usage store is off"):
        KeyGuard(load_keys(path))
    free, _ = keys_file(tmp_path, free={})
    KeyGuard(load_keys(free))  # a key without limits needs no store


async def test_a_streamed_run_is_keyed_and_counted_too(
    keyed: tuple[httpx.AsyncClient, dict[str, str]], db: str
) -> None:
    client, plain = keyed
    assert (await client.post("/v1/chat/completions", json=ASK | {"stream": True})).status_code == 401
    reply = await client.post("/v1/chat/completions", json=ASK | {"stream": True}, headers=bearer(plain["capped"]))
    assert reply.status_code == 200 and "[DONE]" in reply.text
    runs, calls = rows(db)
    run_id = reply.headers["x-moai-run-id"]
    assert [row["key_id"] for row in runs if row["run_id"] == run_id] == ["capped"]
    assert {row["key_id"] for row in calls if row["run_id"] == run_id} == {"capped"}
    refused = await client.post("/v1/chat/completions", json=ASK | {"stream": True}, headers=bearer(plain["capped"]))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "daily_budget_exceeded"


BUDGETED = """
name: budgeted
description: One scripted model whose runs cost $0.004 each, within a budget of $0.005 a run.
models:
  mini: {provider: fake, model: mini, quality: 0.6, max_tokens: 4, delay_s: 0.01,
         price: {input_per_mtok: 0.0, output_per_mtok: 1000.0}, replies: ["Paris is the capital."]}
gate: {top_k: 1, scorer: priors, objective: {budget_usd: 0.005}}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""


def test_a_run_holds_its_budget_until_it_is_settled(db: str) -> None:
    store = UsageStore(db)
    call = {"mix": "m", "node": "n", "model": "a", "status": "ok", "key_id": "k", "ts": time.time()}
    try:
        assert store.admit_run("k", "r1", since=0.0, daily_usd=1.0, hold_usd=0.6) is None
        assert store.admit_run("k", "r2", since=0.0, daily_usd=1.0, hold_usd=0.6) == Refusal("daily_usd", 0.0, 0.6)
        store.write([("call", call | {"run_id": "r1", "cost_usd": 0.5})])  # under way: its hold still counts
        refused = store.admit_run("k", "r2", since=0.0, daily_usd=1.0, hold_usd=0.6)
        assert refused == Refusal("daily_usd", 0.5, pytest.approx(0.1))
        store.write([("call", call | {"run_id": "r1", "cost_usd": 0.25})])  # past its hold: its cost counts
        assert store.admit_run("k", "r2", since=0.0, daily_usd=1.0, hold_usd=0.6) == Refusal("daily_usd", 0.75, 0.0)
        store.write([("settle", {"run_id": "r1"})])
        assert store.admit_run("k", "r2", since=0.0, daily_usd=1.0, hold_usd=0.25) is None
        assert store.admit_run("k", "r3", since=0.0, daily_usd=1.0) == Refusal("daily_usd", 0.75, 0.25)
        assert store.admit_run("other", "r4", since=0.0, daily_usd=1.0, hold_usd=1.0) is None  # per key
        assert store.admit_run("k", "r5", since=time.time() + 10, daily_usd=1.0, hold_usd=1.0) is None  # a new day
    finally:
        store.close()


async def test_concurrent_runs_of_a_key_never_spend_past_its_daily_limit(tmp_path: Path, db: str) -> None:
    """Each run holds its mix's budget ($0.005) while under way: of $0.012 a day, two runs ($0.004 each) fit."""
    folder = tmp_path / "budgeted"
    folder.mkdir()
    (folder / "budgeted.yaml").write_text(BUDGETED)
    path, plain = keys_file(tmp_path, capped={"daily_usd": 0.012})
    ask = ASK | {"model": "budgeted"}
    async with client_of(create_app(folder, keys=path)) as client:
        replies = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=ask, headers=bearer(plain["capped"])) for _ in range(10))
        )
        assert monitor_for(db).flush()
        later = await client.post("/v1/chat/completions", json=ask, headers=bearer(plain["capped"]))
    codes = sorted(reply.status_code for reply in [*replies, later])
    assert codes == [200] * 2 + [429] * 9
    for reply in (reply for reply in replies if reply.status_code == 429):
        refused = reply.json()["error"]
        assert refused["code"] == "daily_budget_exceeded"
        # Refused while a run holds its budget, room may free as it ends; refused after both ended (a loaded
        # machine may serve a request that late), there is none today.
        if "retry in" in refused["message"]:
            assert "up to $0.005" in refused["message"] and "retry in 2 s" in refused["message"]
            assert reply.headers["retry-after"] == "2"
        else:
            assert "until 00:00 UTC" in refused["message"]
    assert "until 00:00 UTC" in later.json()["error"]["message"]  # $0.008 spent: no room for $0.005 today
    _, calls = rows(db)
    assert sum(row["cost_usd"] for row in calls) == pytest.approx(0.008)
    store = UsageStore(db)
    try:
        # Every hold was settled: an unsettled one would count $0.001 more (its budget less its cost).
        assert store.admit_run("capped", "r", since=0.0, daily_usd=0.0085) is None
        assert store.key_spend("capped", 0.0) == pytest.approx(0.008)
    finally:
        store.close()


async def test_the_server_writes_its_queued_usage_rows_when_it_shuts_down(
    mixes: Path, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn ends by re-raising SIGTERM, which skips atexit: the app's shutdown flushes the monitor."""
    flushed: list[str] = []
    monitor = monitor_for(db)

    def flush(timeout: float = 30.0) -> bool:
        flushed.append(monitor.db)
        return True

    monkeypatch.setattr(monitor, "flush", flush)
    app = create_app(mixes)
    async with app.router.lifespan_context(app):
        assert flushed == []
    assert flushed == [db]
