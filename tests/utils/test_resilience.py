"""The circuit breaker and bulkhead that guard calls to other services."""

from __future__ import annotations

import threading

from utils.resilience import CLOSED, HALF_OPEN, OPEN, Bulkhead, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_opens_after_the_threshold_of_failures_in_a_row() -> None:
    breaker = CircuitBreaker(3, reset_seconds=2, clock=Clock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == CLOSED

    assert breaker.allow()
    breaker.record_failure()

    assert breaker.state == OPEN
    assert not breaker.allow()


def test_a_success_resets_the_count_of_failures() -> None:
    breaker = CircuitBreaker(2, reset_seconds=2, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()

    assert breaker.state == CLOSED


def test_after_the_reset_time_exactly_one_trial_call_goes_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, reset_seconds=2, clock=clock)
    breaker.record_failure()
    clock.now += 1.9
    assert not breaker.allow()

    clock.now += 0.2
    allowed = [breaker.allow() for _ in range(5)]

    assert allowed == [True, False, False, False, False]
    assert breaker.state == HALF_OPEN


def test_a_successful_trial_closes_the_circuit() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, reset_seconds=2, clock=clock)
    breaker.record_failure()
    clock.now += 2
    assert breaker.allow()

    breaker.record_success()

    assert breaker.state == CLOSED
    assert all(breaker.allow() for _ in range(3))


def test_a_failed_trial_opens_the_circuit_for_another_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(5, reset_seconds=2, clock=clock)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 2
    assert breaker.allow()

    breaker.record_failure()  # one failure is enough in half-open

    assert breaker.state == OPEN
    clock.now += 1.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_the_bulkhead_refuses_a_caller_beyond_its_limit_and_frees_the_slot_after_use() -> None:
    bulkhead = Bulkhead(1, queue_timeout=0.01)
    inside = threading.Event()
    leave = threading.Event()

    def occupy() -> None:
        with bulkhead.slot() as acquired:
            assert acquired
            inside.set()
            leave.wait(5)

    holder = threading.Thread(target=occupy)
    holder.start()
    inside.wait(5)
    with bulkhead.slot() as acquired:
        assert not acquired
    leave.set()
    holder.join()

    with bulkhead.slot() as acquired:
        assert acquired
