"""The usage monitor: every model call of every run, with cost, energy and CO2e, and users' feedback."""

from __future__ import annotations

import os

from moai.usage.learn import LearnReader
from moai.usage.monitor import UsageMonitor, monitor_for
from moai.usage.store import UsageStore, default_db, resolve_db

__all__ = ["LearnReader", "UsageMonitor", "UsageStore", "default_db", "monitor_for", "record_feedback", "resolve_db"]


def record_feedback(
    run_id: str, score: float, comment: str | None = None, *, db: str | os.PathLike[str] | None = None
) -> None:
    """Store a user's score in [0, 1] for a run (its id is in the mix's output, `run.run_id`).

    When the run's mix learns from feedback (`gate.learn`), the score also updates its gate: an outcome
    of each model the gate chose for the run (a sensitive run is never learned from). Every process of
    the mix reads it within `gate.learn.reload_s` seconds.

    Args:
        run_id: The run's id.
        score: How good the answer was, 0 (bad) to 1 (good).
        comment: Free text.
        db: The usage database; default as for the mixes ($MOAI_USAGE_DB, else the default path).

    Raises:
        ValueError: `score` is outside [0, 1], or the monitor is off.
        KeyError: No run has this id.
    """
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"feedback score must be in [0, 1], got {score}")
    target = resolve_db(db)
    if target is None:
        raise ValueError("the usage monitor is off (MOAI_USAGE_DB=off): there is nowhere to store feedback")
    monitor_for(target).flush()  # the run may still be on its way to the store
    store = UsageStore(target)
    try:
        store.add_feedback(run_id, score, comment)
        store.add_reward(run_id, score, "feedback")
    finally:
        store.close()
