"""Guards for calls to other services: a bulkhead and a circuit breaker, both per process.

The bulkhead caps how many threads a dependency can hold at once; the breaker stops calling a
dependency that keeps failing, so requests fail in microseconds instead of each waiting out a
timeout. pybreaker (1.4.1) was considered and not used: it holds one lock for the whole duration
of each protected call, which would serialise every trip lookup in a worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Bulkhead:
    """At most `limit` calls in flight; a caller waits `queue_timeout` at most for a slot."""

    def __init__(self, limit: int, queue_timeout: float) -> None:
        """A semaphore of `limit` slots."""
        self._slots = threading.BoundedSemaphore(limit)
        self._queue_timeout = queue_timeout

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Yield True holding a slot, or False if none became free in time."""
        acquired = self._slots.acquire(timeout=self._queue_timeout)
        try:
            yield acquired
        finally:
            if acquired:
                self._slots.release()


class CircuitBreaker:
    """Closed -> open after `failure_threshold` failures in a row -> one trial call after `reset_seconds`.

    The lock guards only the state, never the call itself. While open, `allow()` is False; once
    `reset_seconds` have passed it lets exactly one trial call through (half-open): its success
    closes the circuit, its failure opens it for another `reset_seconds`.
    """

    def __init__(
        self, failure_threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start closed."""
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """closed, open or half_open (as of the last call)."""
        return self._state

    def allow(self) -> bool:
        """True when a call may go ahead; a caller that gets True must report success or failure."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and self._clock() - self._opened_at >= self._reset_seconds:
                self._state = HALF_OPEN
                self._trial_in_flight = False
            if self._state == HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        """The dependency answered: close the circuit and forget past failures."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        """The dependency failed: count it; open the circuit at the threshold or after a failed trial."""
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self._threshold:
                self._state = OPEN
                self._opened_at = self._clock()
                self._trial_in_flight = False
