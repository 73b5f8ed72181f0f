"""A key's limits on a real PostgreSQL: an older database gets its key columns, and a rate holds across connections."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from _postgres import postgres_bin, postgres_server

from moai.usage import UsageStore
from moai.usage.store import CALL_COLUMNS, RUN_COLUMNS

pytestmark = pytest.mark.skipif(postgres_bin() is None, reason="PostgreSQL is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_an_older_postgres_database_gets_the_key_columns(postgres: str) -> None:
    import psycopg

    with psycopg.connect(postgres, autocommit=True) as conn:
        runs = ", ".join(f"{c} TEXT" for c in RUN_COLUMNS[1:] if c not in ("key_id", "ts", "cost_usd"))
        calls = ", ".join(f"{c} TEXT" for c in CALL_COLUMNS if c not in ("key_id", "ts", "cost_usd"))
        conn.execute(
            f"CREATE TABLE runs (run_id TEXT PRIMARY KEY, ts DOUBLE PRECISION, cost_usd DOUBLE PRECISION, {runs})"
        )
        conn.execute(
            f"CREATE TABLE calls (id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION, cost_usd DOUBLE PRECISION, {calls})"
        )
        conn.execute("INSERT INTO calls (run_id, ts, mix, model, cost_usd) VALUES ('old', 1.0, 'm', 'a', 0.5)")
    with ThreadPoolExecutor(2) as pool:  # two processes starting at once both migrate it
        stores = list(pool.map(lambda _: UsageStore(postgres), range(2)))
    try:
        [old] = stores[0].calls()
        assert old["key_id"] is None and old["cost_usd"] == 0.5
        stores[1].write(
            [("call", {"run_id": "new", "ts": 2.0, "mix": "m", "model": "a", "cost_usd": 1.0, "key_id": "k"})]
        )
        assert stores[0].key_spend("k", 0.0) == 1.0
    finally:
        for store in stores:
            store.close()


def test_a_keys_rate_holds_across_connections(postgres: str) -> None:
    stores = [UsageStore(postgres) for _ in range(4)]  # one connection a worker, as each process has its own

    def ten(store: UsageStore) -> list[float | None]:
        return [store.admit("shared", 5, 60.0, now=100.0 + i / 1000) for i in range(10)]

    try:
        with ThreadPoolExecutor(4) as pool:
            waits = [wait for some in pool.map(ten, stores) for wait in some]
        assert len(waits) == 40 and sum(wait is None for wait in waits) == 5
    finally:
        for store in stores:
            store.close()
