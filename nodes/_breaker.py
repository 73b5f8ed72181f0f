"""The circuit breaker: a model that keeps failing is skipped, by the gate and by every call, for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CircuitBreaker"]


@dataclass
class _Health:
    failures: int = 0
    opened_at: float = 0.0


class CircuitBreaker:
    """Count consecutive failures per model; at `failures` the circuit opens for `cooldown_s` seconds.

    After the cooldown one trial call is let through (half-open): success closes the circuit, failure
    opens it again for another cooldown.
    """

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._health: dict[str, _Health] = {}
        self._lock = threading.Lock()

    def open_reason(self, model: str) -> str | None:
        """Return why `model` must not be called now, or None if it may be."""
        with self._lock:
            health = self._health.get(model)
            if health is None or health.failures < self.failures:
                return None
            left = health.opened_at + self.cooldown_s - self._clock()
            if left <= 0:
                return None
            return f"circuit open after {health.failures} failures in a row; retried in {left:.0f}s"

    def record(self, model: str, ok: bool) -> None:
        """Record the outcome of a call to `model`."""
        with self._lock:
            health = self._health.setdefault(model, _Health())
            if ok:
                health.failures = 0
                return
            health.failures += 1
            if health.failures >= self.failures:
                health.opened_at = self._clock()
