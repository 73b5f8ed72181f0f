"""The usage monitor: nodes hand it rows, a writer thread stores them, and a run never waits for it.

Recording must never slow or break a run: `record` only puts the row on a queue. The writer thread
batches what is waiting into one transaction; if the store is down, the batch is dropped, the loss is
logged, and the next batch tries a fresh connection. One writer per database and process, and SQLite's
WAL with a busy timeout (or PostgreSQL) between processes, so concurrent runs lose no record.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from moai.usage.store import UsageStore

__all__ = ["UsageMonitor", "monitor_for"]

log = logging.getLogger("moai.usage")

_BATCH = 512


class UsageMonitor:
    """Writes usage rows to one database from a background thread.

    Args:
        db: A SQLite file path or a `postgresql://` URL.
    """

    def __init__(self, db: str) -> None:
        self.db = db
        self.lost = 0
        """Rows dropped because the store could not take them."""
        self._queue: queue.Queue[tuple[str, Mapping[str, Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._write_forever, name=f"moai-usage:{db}", daemon=True)
        self._thread.start()

    def record(self, kind: str, row: Mapping[str, Any]) -> None:
        """Queue a row: kind is "run" (a run starts), "finish" (it ends), "call" or "feedback"."""
        self._queue.put((kind, row))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued row is written or dropped; return False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _write_forever(self) -> None:
        store: UsageStore | None = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                store = store or UsageStore(self.db)
                store.write(batch)
            except Exception as err:
                self.lost += len(batch)
                log.warning(
                    "usage store %s failed, %d rows lost (%s: %s)", self.db, len(batch), type(err).__name__, err
                )
                if store is not None:
                    try:
                        store.close()
                    except Exception:
                        log.debug("closing the failed usage store", exc_info=True)
                store = None
            finally:
                for _ in batch:
                    self._queue.task_done()


_monitors: dict[str, UsageMonitor] = {}
_lock = threading.Lock()


def monitor_for(db: str) -> UsageMonitor:
    """Return this process's monitor of a database, starting it on first use."""
    with _lock:
        if db not in _monitors:
            _monitors[db] = UsageMonitor(db)
        return _monitors[db]


@atexit.register
def _flush_all() -> None:
    for monitor in list(_monitors.values()):
        monitor.flush(timeout=10.0)
