"""The server's bearer keys: a keys file of hashed keys, each with an optional daily spend and rate limit.

A keys file (YAML, or JSON by its suffix) maps each key's id to its SHA-256 and its limits::

    keys:
      team-a: {sha256: 9f86d0..., daily_usd: 5.0, rpm: 60}
      ci: {sha256: 2c26b4...}

The plain key is never stored. A key is 32 random bytes (`secrets.token_urlsafe(32)`, made by
`moai keys add`): with 256 bits to guess, a plain SHA-256 is as safe as a salted, slow hash (a salt
and a work factor defend guessable secrets such as passwords, which these are not), and costs a
microsecond a request where scrypt or PBKDF2 would cost tens of milliseconds.

The limits hold across a server's workers and replicas because they are read from the usage store
they share (PostgreSQL for several machines): the spend is the sum of the key's calls' cost since
00:00 UTC and what its runs under way may still cost, the rate the key's requests let in over the last
60 seconds (`KeyGuard.admit`, `UsageStore.admit_run`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moai.errors import MixError
from moai.mix_instructions.load import read_data
from moai.serve.errors import ApiError
from moai.usage import UsageStore, monitor_for, resolve_db

__all__ = ["MAX_DAILY_USD", "MAX_KEYS", "MAX_RPM", "Key", "KeyGuard", "Keys", "add_key", "hash_key", "load_keys"]

MAX_KEYS = 10_000
"""Most keys one file may hold."""
MAX_RPM = 1_000_000
"""Highest rate limit, in requests a minute."""
MAX_DAILY_USD = 1e9
"""Highest daily spend limit, in US dollars."""
WINDOW_S = 60.0
"""The window a key's `rpm` counts requests over."""
RETRY_HELD_S = 2
"""The Retry-After of a run refused while the key's runs under way hold the rest of its day's limit."""
MAX_BEARER = 512
"""Longest bearer token read; a longer one is no key."""
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("sha256", "daily_usd", "rpm")


def hash_key(key: str) -> str:
    """Return the SHA-256 of a key, in hex: what a keys file stores."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Key:
    """One key of a keys file: its id (recorded in every usage row of its runs), hash and limits."""

    id: str
    sha256: str
    daily_usd: float | None = None
    rpm: int | None = None


class Keys:
    """The keys of a server, found by the hash of the bearer token a request shows."""

    def __init__(self, keys: list[Key], source: str = "<keys>") -> None:
        self.source = source
        self._by_hash = {key.sha256: key for key in keys}
        self.ids = [key.id for key in keys]

    def find(self, bearer: str) -> Key | None:
        """Return the key whose hash is the token's, or None."""
        if not bearer or len(bearer) > MAX_BEARER:
            return None
        return self._by_hash.get(hash_key(bearer))

    def limited(self) -> list[str]:
        """Return the ids of the keys with a limit (they need the usage store)."""
        return [key.id for key in self._by_hash.values() if key.daily_usd is not None or key.rpm is not None]


def load_keys(path: str | os.PathLike[str]) -> Keys:
    """Read a keys file.

    Raises:
        MixError: The file cannot be read, or a field is wrong; the message names the file and the field.
    """
    source = str(path)
    return Keys(_parse(read_data(path), source), source)


def _parse(data: Any, source: str) -> list[Key]:
    if not isinstance(data, Mapping) or set(data) != {"keys"}:
        raise MixError(source, "", "a keys file is a mapping with one field, 'keys': {ID: {sha256, daily_usd, rpm}}")
    entries = data["keys"]
    if entries is None:
        return []
    if not isinstance(entries, Mapping):
        raise MixError(source, "keys", "a mapping of key ids to {sha256, daily_usd, rpm}")
    if len(entries) > MAX_KEYS:
        raise MixError(source, "keys", f"more than {MAX_KEYS} keys")
    keys: list[Key] = []
    hashes: dict[str, str] = {}
    for key_id, entry in entries.items():
        if not isinstance(key_id, str) or not _ID.fullmatch(key_id):
            shown = repr(key_id)[:70]
            raise MixError(
                source, "keys", f"{shown} is not a key id: 1 to 64 of A-Z a-z 0-9 _ . @ -, a letter or digit first"
            )
        field = f"keys.{key_id}"
        if not isinstance(entry, Mapping):
            raise MixError(source, field, "a mapping {sha256, daily_usd, rpm}")
        unknown = [str(name)[:40] for name in entry if name not in _FIELDS]
        if unknown:
            # A misspelt limit would otherwise be no limit at all.
            raise MixError(source, f"{field}.{unknown[0]}", f"unknown field: the fields are {', '.join(_FIELDS)}")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise MixError(source, f"{field}.sha256", "the key's SHA-256 in 64 lowercase hex digits (moai keys add)")
        if digest in hashes:
            raise MixError(source, f"{field}.sha256", f"the same key as '{hashes[digest]}': a key has one id")
        hashes[digest] = key_id
        daily = entry.get("daily_usd")
        if daily is not None and (
            isinstance(daily, bool)
            or not isinstance(daily, int | float)
            or not math.isfinite(daily)
            or not 0 <= daily <= MAX_DAILY_USD
        ):
            raise MixError(source, f"{field}.daily_usd", f"US dollars a day: a number from 0 to {MAX_DAILY_USD:.0e}")
        rpm = entry.get("rpm")
        if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or not 1 <= rpm <= MAX_RPM):
            raise MixError(source, f"{field}.rpm", f"requests a minute: an integer from 1 to {MAX_RPM}")
        keys.append(Key(key_id, digest, None if daily is None else float(daily), rpm))
    return keys


def add_key(path: str | os.PathLike[str], key_id: str, daily_usd: float | None = None, rpm: int | None = None) -> str:
    """Make a new random key, add its hash and limits to a keys file (made if missing); return the key.

    The file is rewritten whole (YAML comments are not kept), through a temporary file, readable by its
    owner only.

    Raises:
        MixError: The file is not a valid keys file, the id is taken or not an id, or a limit is wrong.
    """
    target = Path(path)
    source = str(target)
    if target.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise MixError(source, "", "a keys file is .yaml, .yml or .json")
    data = read_data(target) if target.exists() else {"keys": {}}
    keys = _parse(data, source)
    if key_id in [key.id for key in keys]:
        raise MixError(source, f"keys.{key_id}", "this id is taken: choose another (or remove its entry)")
    key = secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"sha256": hash_key(key)}
    if daily_usd is not None:
        entry["daily_usd"] = daily_usd
    if rpm is not None:
        entry["rpm"] = rpm
    entries = {k.id: _entry(k) for k in keys} | {key_id: entry}
    _parse({"keys": entries}, source)  # the new entry meets the same rules as the file's
    if target.suffix.lower() == ".json":
        text = json.dumps({"keys": entries}, indent=2) + "\n"
    else:
        text = yaml.safe_dump({"keys": entries}, sort_keys=False, default_flow_style=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return key


def _entry(key: Key) -> dict[str, Any]:
    entry: dict[str, Any] = {"sha256": key.sha256}
    if key.daily_usd is not None:
        entry["daily_usd"] = key.daily_usd
    if key.rpm is not None:
        entry["rpm"] = key.rpm
    return entry


def _day_start(now: float) -> float:
    """Return 00:00 UTC of the day of `now` (a Unix time)."""
    return now - now % 86_400


class KeyGuard:
    """What a request must show with `--keys`: a known bearer key within its limits.

    Args:
        keys: The server's keys.
        usage_db: The usage store the limits are read from and counted in (as for `moai.load_mix`).
        clock: The time now (Unix seconds); tests give their own.

    Raises:
        MixError: A key has a limit but the usage store is off: no limit could hold.
    """

    def __init__(
        self, keys: Keys, usage_db: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.db = resolve_db(usage_db)
        limited = keys.limited()
        if limited and self.db is None:
            raise MixError(
                keys.source,
                f"keys.{limited[0]}",
                "has a limit, but the usage store is off ($MOAI_USAGE_DB): limits are counted there",
            )
        self.clock = clock
        self._store: UsageStore | None = None
        self._lock = threading.Lock()

    def check_key(self, authorization: str | None) -> Key:
        """Return the key of a request's `Authorization` header, limits aside.

        Raises:
            ApiError: 401 without a known key.
        """
        scheme, _, token = (authorization or "").strip().partition(" ")
        key = self.keys.find(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            message = "a valid API key is needed: send 'Authorization: Bearer <key>'"
            if authorization:
                message = "the API key is not valid: send 'Authorization: Bearer <key>' with a key of this server"
            raise ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return key

    def admit(self, key: Key, run_id: str, hold_usd: float | None = None) -> bool:
        """Let a run of a key in if it is within the key's limits (blocking); return whether it holds spend.

        The daily limit holds across every worker and replica sharing the usage store, because a run is
        let in, in one transaction serialised per key, only if the key's spend (its calls' cost today, and
        what its runs under way may still spend) plus `hold_usd` (the most the run can cost: its mix's
        `budget_usd`, which `call_model` enforces on every call) is within the limit; the hold stays until
        `settle`. So, when every run has a hold, a key's spend never exceeds its daily limit. A run without
        one (its mix sets no budget, or it is an A/B split) is let in while the spend is under the limit,
        and may take the key over it by what it costs: the key's spend is then at most the limit plus the
        cost of its unheld runs that were under way when the spend reached it.

        Returns:
            True when the run holds spend: `settle(run_id)` must follow once the run has ended.

        Raises:
            ApiError: 429 over the key's daily spend or its rate, with Retry-After.
        """
        if key.daily_usd is None and key.rpm is None:
            return False
        holds = key.daily_usd is not None and hold_usd is not None
        with self._lock:  # one connection a process: UsageStore is not thread-safe
            if self._store is None:
                self._store = UsageStore(str(self.db))
            now = self.clock()
            refused = self._store.admit_run(
                key.id,
                run_id,
                since=_day_start(now),
                daily_usd=key.daily_usd,
                hold_usd=hold_usd,
                rpm=key.rpm,
                window_s=WINDOW_S,
                now=now,
            )
        if refused is None:
            return holds
        if refused.reason == "rpm":
            retry = max(1, math.ceil(refused.wait_s))
            raise ApiError(
                429,
                f"the key '{key.id}' is over its rate of {key.rpm} requests a minute: retry in {retry} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        limit = key.daily_usd or 0.0
        spent = f"the key '{key.id}' has spent ${refused.spent_usd:.6f} today of its ${limit:g} a day (UTC)"
        fits_later = refused.spent_usd + hold_usd <= limit if hold_usd is not None else refused.spent_usd < limit
        if fits_later:
            # The key's runs under way hold the rest: room may free as they end (each costs at most its hold).
            up_to = f" (up to ${hold_usd:g} for this mix)" if hold_usd is not None else ""
            raise ApiError(
                429,
                f"{spent}, and its runs under way may cost ${refused.held_usd:.6f} more: this run{up_to} waits"
                f" for them to end: retry in {RETRY_HELD_S} s",
                code="daily_budget_exceeded",
                headers={"Retry-After": str(RETRY_HELD_S)},
            )
        wait = _day_start(now) + 86_400 - now
        raise ApiError(
            429,
            f"{spent}: it is refused until 00:00 UTC",
            code="daily_budget_exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    def settle(self, run_id: str) -> None:
        """End a run's hold: queued after the run's call rows, so its cost is counted throughout."""
        if self.db is not None:
            monitor_for(str(self.db)).record("settle", {"run_id": run_id})

    def close(self) -> None:
        """Close the store's connection."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
