"""The usage database as the learning gate's log: every process reads the outcomes all of them stored."""

from __future__ import annotations

import logging
import threading

from moai.usage.store import LearnUpdate, UsageStore

__all__ = ["LearnReader"]

log = logging.getLogger(__name__)


class LearnReader:
    """Reads a mix's learning updates from a usage database, on its own connection (thread-safe).

    A read that fails is logged and returns nothing: the gate then routes on what it already learned.
    """

    def __init__(self, db: str) -> None:
        self.db = db
        self._store: UsageStore | None = None
        self._lock = threading.Lock()

    def learn_updates(self, mix: str, after: int = 0, limit: int = 10_000) -> list[LearnUpdate]:
        """Return up to `limit` updates of a mix with an id above `after` (see `UsageStore.learn_updates`)."""
        with self._lock:
            try:
                self._store = self._store or UsageStore(self.db)
                return self._store.learn_updates(mix, after, limit)
            except Exception as err:
                log.warning("reading the learning updates from %s failed (%s: %s)", self.db, type(err).__name__, err)
                if self._store is not None:
                    try:
                        self._store.close()
                    except Exception:
                        log.debug("closing the failed usage store", exc_info=True)
                self._store = None
                return []
