from __future__ import annotations

from moai.nodes._breaker import CircuitBreaker


def test_the_circuit_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record("m", ok=False)
    assert breaker.open_reason("m") is None
    breaker.record("m", ok=False)
    assert breaker.open_reason("m") == "circuit open after 2 failures in a row; retried in 10s"
    now[0] = 10.0
    assert breaker.open_reason("m") is None  # one trial call goes through
    breaker.record("m", ok=False)
    assert breaker.open_reason("m") is not None  # the trial failed: open again
    now[0] = 25.0
    breaker.record("m", ok=True)
    assert breaker.open_reason("m") is None


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    breaker.record("m", ok=False)
    breaker.record("m", ok=True)
    breaker.record("m", ok=False)
    assert breaker.open_reason("m") is None
