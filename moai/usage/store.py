"""Where usage rows live: SQLite in WAL mode by default, PostgreSQL when given a database URL.

Six tables: `runs` (one row a query through a mix), `calls` (one row a model call, whatever its
outcome), `feedback` (scores users gave to runs), and online learning's `learn_contexts` (a learning
gate's choice: the query's embedding, the model, the scorer's prediction) and `learn_updates` (one
outcome of such a choice, from feedback or a judge: what every process's bandit adds up), and
`key_requests` (when each request of a server's key was let in: its rate limit, across processes) and
`key_holds` (what each run of a key under way may still spend: its daily limit, across processes). A
database written before a table or column existed gets it when it is next opened. Both back-ends speak
the same SQL, written once with `?` placeholders; PostgreSQL's driver gets them as `%s`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

__all__ = ["CALL_COLUMNS", "RUN_COLUMNS", "LearnUpdate", "Refusal", "UsageStore", "default_db", "resolve_db"]

LearnUpdate = tuple[int, str, list[float], float, float]
"""One row of `learn_updates` as read back: (id, model, embedding, prior, reward)."""


class Refusal(NamedTuple):
    """Why `UsageStore.admit_run` did not let a run in."""

    reason: Literal["daily_usd", "rpm"]
    spent_usd: float = 0.0
    """The key's calls' cost today."""
    held_usd: float = 0.0
    """What its runs under way may still cost."""
    wait_s: float = 0.0
    """For "rpm": the seconds until the rate's window has room."""


RUN_COLUMNS = (
    "run_id",
    "ts",
    "mix",
    "arm",
    "thread_id",
    "user_id",
    "query",
    "selected",
    "scores",
    "cache_hit",
    "kept",
    "status",
    "error",
    "answer",
    "models_used",
    "cost_usd",
    "baseline_model",
    "baseline_cost_usd",
    "finished_ts",
    "key_id",
)
"""`selected`, `scores` and `models_used` hold JSON; `status` is running, ok or error."""

CALL_COLUMNS = (
    "run_id",
    "ts",
    "mix",
    "arm",
    "thread_id",
    "node",
    "model",
    "provider",
    "tokens_in",
    "tokens_out",
    "latency_s",
    "cost_usd",
    "energy_wh",
    "co2e_g",
    "status",
    "error",
    "fallback_for",
    "usage_estimated",
    "key_id",
    "response",
)
"""`response` holds a proposer's answer text where its mix records answers (`usage.record_answers`), else NULL."""

_REAL = {
    "ts",
    "cost_usd",
    "baseline_cost_usd",
    "finished_ts",
    "latency_s",
    "energy_wh",
    "co2e_g",
    "score",
    "prior",
    "reward",
}
_MAX_EMBEDDING = 4096
"""Most floats an embedding stored for online learning may hold (encoders give 256 to 1024)."""
_INT = {"cache_hit", "kept", "tokens_in", "tokens_out", "usage_estimated"}
_JSON = {"selected", "scores", "models_used"}
_OFF = {"", "off", "none", "0", "false"}


def default_db() -> Path:
    """Return the embedded database's default path: $XDG_DATA_HOME/moai/usage.db, else ~/.local/share/moai."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "moai" / "usage.db"


def resolve_db(db: str | os.PathLike[str] | None = None) -> str | None:
    """Return where usage goes: $MOAI_USAGE_DB if set, else `db`, else the default path; None when off.

    A value of `off` (or `none`, `0`, `false`, empty) turns the monitor off.
    """
    chosen = os.environ.get("MOAI_USAGE_DB", str(db) if db is not None else str(default_db()))
    return None if chosen.strip().lower() in _OFF else chosen


_INT_MAX = 2**63 - 1


def _column_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _JSON:
        return json.dumps(value)
    if column in _INT | _REAL:
        # A figure no column can hold (infinite, NaN, beyond 64 bits) is stored as unknown: the row is kept.
        if not isinstance(value, int | float) or not math.isfinite(value) or abs(value) > _INT_MAX:
            return None
        return int(value) if column in _INT else float(value)  # PostgreSQL takes no bool for an INTEGER column
    return value


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """Return a row read back with every figure that is not a finite, non-negative number as None.

    A database written by an earlier release (or by hand) may hold infinities, NaNs or negative costs;
    whatever reads it sees them as unknown.
    """
    for column in (_INT | _REAL) & row.keys():
        value = row[column]
        if value is not None and (not isinstance(value, int | float) or not math.isfinite(value) or value < 0):
            row[column] = None
    return row


def _usd(value: Any) -> float:
    """Return a sum of costs read back as a finite, non-negative float (None, NaN or below 0: 0)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) and value > 0 else 0.0


def _is_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


class UsageStore:
    """One connection to a usage database; not thread-safe (the monitor's writer thread owns one).

    Args:
        db: A file path (SQLite) or a `postgresql://` URL.

    Raises:
        ModuleNotFoundError: A PostgreSQL URL without the `psycopg` package (install `.[postgres]`).
    """

    def __init__(self, db: str) -> None:
        self.db = db
        self.postgres = _is_url(db)
        if self.postgres:
            try:
                import psycopg
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    "a PostgreSQL usage database needs psycopg: pip install 'mixture-of-ai[postgres]'"
                ) from err
            self._conn: Any = psycopg.connect(db, autocommit=False, connect_timeout=5)
        else:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._create()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _type(self, column: str) -> str:
        if column in _REAL:
            return "DOUBLE PRECISION" if self.postgres else "REAL"
        return "INTEGER" if column in _INT else "TEXT"

    def _create(self) -> None:
        key = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        runs = ", ".join(f"{c} {self._type(c)}" for c in RUN_COLUMNS[1:])
        calls = ", ".join(f"{c} {self._type(c)}" for c in CALL_COLUMNS)
        feedback = f"id {key}, run_id TEXT NOT NULL, ts {self._type('ts')}, score {self._type('score')}, comment TEXT"
        blob = "BYTEA" if self.postgres else "BLOB"
        real = self._type("prior")
        contexts = f"run_id TEXT NOT NULL, mix TEXT, model TEXT, ts {real}, prior {real}, sources TEXT, x {blob}"
        updates = f"id {key}, mix TEXT, model TEXT, run_id TEXT, ts {real}, prior {real}, reward {real}, source TEXT"
        updates += f", x {blob}"
        holds = f"ts {real}, usd {real}"
        with self._transaction() as cur:
            if self.postgres:
                # Two processes creating one table at once collide in PostgreSQL's catalog even with IF NOT
                # EXISTS: the first to open the database does it, the others wait (SQLite's write lock does this).
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('moai-usage-schema'))")
            cur.execute(f"CREATE TABLE IF NOT EXISTS learn_contexts ({contexts})")
            cur.execute(f"CREATE TABLE IF NOT EXISTS learn_updates ({updates})")
            cur.execute("CREATE INDEX IF NOT EXISTS learn_contexts_run ON learn_contexts (run_id)")
            cur.execute("CREATE INDEX IF NOT EXISTS learn_updates_mix ON learn_updates (mix, id)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, {runs})")
            cur.execute(f"CREATE TABLE IF NOT EXISTS calls (id {key}, {calls})")
            cur.execute(f"CREATE TABLE IF NOT EXISTS feedback ({feedback})")
            cur.execute("CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id)")
            cur.execute("CREATE INDEX IF NOT EXISTS calls_ts ON calls (ts)")
            cur.execute("CREATE INDEX IF NOT EXISTS runs_ts ON runs (ts)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS key_requests (key_id TEXT NOT NULL, ts {self._type('ts')})")
            cur.execute("CREATE INDEX IF NOT EXISTS key_requests_key ON key_requests (key_id, ts)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS key_holds (run_id TEXT NOT NULL, key_id TEXT NOT NULL, {holds})")
            cur.execute("CREATE INDEX IF NOT EXISTS key_holds_key ON key_holds (key_id, ts)")
            for table, columns in (("runs", RUN_COLUMNS), ("calls", CALL_COLUMNS)):
                # A database of an earlier release lacks the columns added since: they are added, empty.
                cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
                present = {d[0] for d in cur.description}
                for column in (c for c in columns if c not in present):
                    exists = " IF NOT EXISTS" if self.postgres else ""  # SQLite's write lock already serialises this
                    cur.execute(f"ALTER TABLE {table} ADD COLUMN{exists} {column} {self._type(column)}")
            cur.execute("CREATE INDEX IF NOT EXISTS calls_key ON calls (key_id, ts)")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        cur = self._conn.cursor()
        try:
            if not self.postgres:
                cur.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            yield cur
        except BaseException:
            self._conn.rollback()
            raise
        else:
            self._conn.commit()
        finally:
            cur.close()

    def write(self, ops: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Apply a batch in one transaction.

        Each op is ("run", row) to insert a run, ("finish", row) to update it, ("call", row), ("feedback", row),
        ("learn", row) for a learning gate's choice (run_id, mix, model, prior, sources, x: the embedding) or
        ("reward", row) for an outcome of it (run_id, model, reward, source; see `add_reward`), or
        ("settle", row) to end the hold of a key's run (run_id; see `admit_run`).
        """
        with self._transaction() as cur:
            for kind, row in ops:
                if kind == "settle":
                    cur.execute(self._sql("DELETE FROM key_holds WHERE run_id = ?"), [row["run_id"]])
                    continue
                if kind == "learn":
                    self._add_context(cur, row)
                    continue
                if kind == "reward":
                    self._reward(cur, row["run_id"], row.get("model"), row.get("reward"), str(row.get("source")))
                    continue
                values = {k: _column_value(k, v) for k, v in row.items()}
                if kind == "finish":
                    values.pop("ts", None)  # a run keeps the time it started; it ends at `finished_ts`
                    sets = ", ".join(f"{k} = ?" for k in values if k != "run_id")
                    cur.execute(
                        self._sql(f"UPDATE runs SET {sets} WHERE run_id = ?"),
                        [
                            *(v for k, v in values.items() if k != "run_id"),
                            values["run_id"],
                        ],
                    )
                    continue
                table = {"run": "runs", "call": "calls", "feedback": "feedback"}[kind]
                names = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                cur.execute(self._sql(f"INSERT INTO {table} ({names}) VALUES ({marks})"), list(values.values()))

    def _select(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self._conn.cursor()
        try:
            cur.execute(self._sql(sql), list(params))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()
        if self.postgres:
            self._conn.commit()  # end the read transaction, so later reads see new rows
        for row in rows:
            for key in _JSON & row.keys():
                row[key] = json.loads(row[key]) if row[key] is not None else None
        return [_finite(row) for row in rows]

    def runs(self, since: float | None = None) -> list[dict[str, Any]]:
        """Return the runs that started at or after `since` (a Unix time), oldest first."""
        return self._select("SELECT * FROM runs WHERE ts >= ? ORDER BY ts", [since or 0.0])

    def calls(self, since: float | None = None) -> list[dict[str, Any]]:
        """Return the model calls made at or after `since` (a Unix time), oldest first."""
        return self._select("SELECT * FROM calls WHERE ts >= ? ORDER BY ts, id", [since or 0.0])

    def feedback(self) -> list[dict[str, Any]]:
        """Return every feedback row, oldest first."""
        return self._select("SELECT * FROM feedback ORDER BY ts, id")

    def add_feedback(self, run_id: str, score: float, comment: str | None = None) -> None:
        """Store a user's score for a run (several per run are kept; the report averages them).

        Raises:
            KeyError: No run has this id.
        """
        if not self._select("SELECT run_id FROM runs WHERE run_id = ?", [run_id]):
            raise KeyError(f"no run '{run_id}' in the usage database {self.db}")
        self.write([("feedback", {"run_id": run_id, "ts": time.time(), "score": score, "comment": comment})])

    def _add_context(self, cur: Any, row: Mapping[str, Any]) -> None:
        x = [float(v) for v in row.get("x", ())][:_MAX_EMBEDDING]
        if not x or not all(math.isfinite(v) for v in x):
            return
        values = [
            row["run_id"],
            row.get("mix"),
            row.get("model"),
            _column_value("ts", row.get("ts", time.time())),
            _column_value("prior", row.get("prior")),
            ",".join(row.get("sources", ())),
            array("f", x).tobytes(),
        ]
        cur.execute(
            self._sql(
                "INSERT INTO learn_contexts (run_id, mix, model, ts, prior, sources, x) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            values,
        )

    def _reward(self, cur: Any, run_id: str, model: str | None, reward: Any, source: str) -> int:
        """Turn a run's outcome into learning updates, one per context of it that learns from `source`."""
        if not isinstance(reward, int | float) or not 0.0 <= reward <= 1.0:
            return 0
        cur.execute(self._sql("SELECT mix, model, prior, sources, x FROM learn_contexts WHERE run_id = ?"), [run_id])
        added = 0
        for mix, chosen, prior, sources, x in cur.fetchall():
            if (model is not None and chosen != model) or source not in (sources or "").split(","):
                continue
            cur.execute(
                self._sql(
                    "INSERT INTO learn_updates (mix, model, run_id, ts, prior, reward, source, x) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                [mix, chosen, run_id, time.time(), prior, float(reward), source, x],
            )
            added += 1
        return added

    def add_reward(self, run_id: str, reward: float, source: str = "feedback", model: str | None = None) -> int:
        """Record an outcome for online learning; return how many updates it made.

        It counts for each model the run's learning gate chose (only `model`, when given) whose mix learns
        from `source`; a run of a mix that does not learn, or a sensitive run (never learned from), makes none.
        """
        with self._transaction() as cur:
            return self._reward(cur, run_id, model, reward, source)

    def learn_updates(self, mix: str, after: int = 0, limit: int = 10_000) -> list[LearnUpdate]:
        """Return up to `limit` learning updates of a mix with an id above `after`, oldest first."""
        cur = self._conn.cursor()
        try:
            cur.execute(
                self._sql(
                    "SELECT id, model, x, prior, reward FROM learn_updates WHERE mix = ? AND id > ? ORDER BY id LIMIT ?"
                ),
                [mix, int(after), int(limit)],
            )
            rows = cur.fetchall()
        finally:
            cur.close()
        if self.postgres:
            self._conn.commit()
        out: list[LearnUpdate] = []
        for id_, model, x, prior, reward in rows:
            values = array("f")
            values.frombytes(bytes(x or b"")[: 4 * _MAX_EMBEDDING])
            prior = prior if isinstance(prior, float) and math.isfinite(prior) else 0.0
            if isinstance(reward, float) and math.isfinite(reward):
                out.append((int(id_), str(model), values.tolist(), prior, reward))
        return out

    def key_spend(self, key_id: str, since: float) -> float:
        """Return the US dollars the calls of a key's runs cost at or after `since` (a Unix time).

        Calls, not runs: each call's row is written as it ends, a run's cost only when the run does.
        """
        rows = self._select("SELECT SUM(cost_usd) AS spent FROM calls WHERE key_id = ? AND ts >= ?", [key_id, since])
        spent = rows[0]["spent"] if rows else None
        return float(spent) if spent is not None else 0.0

    def admit(self, key_id: str, limit: int, window_s: float, now: float | None = None) -> float | None:
        """Let one request of a key in if fewer than `limit` were let in over the last `window_s` seconds.

        Counting and adding are one transaction, serialised per key (SQLite's write lock, PostgreSQL's
        advisory lock), so processes sharing the database share the limit.

        Returns:
            None when the request is let in (and counted), else the seconds until the window has room.
        """
        refused = self.admit_run(key_id, "", since=0.0, rpm=limit, window_s=window_s, now=now)
        return None if refused is None else refused.wait_s

    def admit_run(
        self,
        key_id: str,
        run_id: str,
        *,
        since: float,
        daily_usd: float | None = None,
        hold_usd: float | None = None,
        rpm: int | None = None,
        window_s: float = 60.0,
        now: float | None = None,
    ) -> Refusal | None:
        """Let a run of a key in if it fits the key's daily spend and rate; hold what it may spend.

        The key's spend is what its calls since `since` cost, plus what each of its runs under way may
        still spend (its hold less what its calls cost so far). A run is let in when that spend is under
        `daily_usd` and, with a `hold_usd` (the most the run can cost: its mix's budget), when the spend
        plus the hold is within `daily_usd`; its hold is then kept until the run is settled (a "settle" op,
        written after the run's calls, so the run's cost is counted all along). Checking, counting and
        holding are one transaction, serialised per key (PostgreSQL's advisory lock, SQLite's write lock),
        so every process sharing the database shares the limits. An unsettled hold (a process that died
        mid-run) lapses at the end of its day.

        Returns:
            None when the run is let in (counted for the rate, and held), else why not.
        """
        now = time.time() if now is None else now
        with self._transaction() as cur:
            if self.postgres:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"moai-key:{key_id}"])
            if daily_usd is not None:
                spent, held = self._key_spend(cur, key_id, since)
                if spent + held >= daily_usd or (hold_usd is not None and spent + held + hold_usd > daily_usd):
                    return Refusal("daily_usd", spent, held)
            if rpm is not None:
                start = now - window_s
                cur.execute(self._sql("DELETE FROM key_requests WHERE key_id = ? AND ts <= ?"), [key_id, start])
                cur.execute(
                    self._sql("SELECT COUNT(*), MIN(ts) FROM key_requests WHERE key_id = ? AND ts > ?"),
                    [key_id, start],
                )
                count, oldest = cur.fetchone()
                if int(count) >= rpm:
                    wait = max(0.0, float(oldest) + window_s - now) if oldest is not None else window_s
                    return Refusal("rpm", wait_s=wait)
                cur.execute(self._sql("INSERT INTO key_requests (key_id, ts) VALUES (?, ?)"), [key_id, now])
            if daily_usd is not None and hold_usd is not None:
                cur.execute(
                    self._sql("INSERT INTO key_holds (run_id, key_id, ts, usd) VALUES (?, ?, ?, ?)"),
                    [run_id, key_id, now, float(hold_usd)],
                )
        return None

    def _key_spend(self, cur: Any, key_id: str, since: float) -> tuple[float, float]:
        """Return what a key's calls cost since `since`, and what its held runs may still spend."""
        cur.execute(self._sql("DELETE FROM key_holds WHERE key_id = ? AND ts < ?"), [key_id, since])
        cur.execute(self._sql("SELECT SUM(cost_usd) FROM calls WHERE key_id = ? AND ts >= ?"), [key_id, since])
        spent = _usd(cur.fetchone()[0])
        cur.execute(
            self._sql(
                "SELECT h.usd, SUM(c.cost_usd) FROM key_holds h LEFT JOIN calls c ON c.run_id = h.run_id"
                " WHERE h.key_id = ? GROUP BY h.run_id, h.usd"
            ),
            [key_id],
        )
        return spent, sum(max(_usd(held) - _usd(used), 0.0) for held, used in cur.fetchall())

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
