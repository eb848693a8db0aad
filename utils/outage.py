"""Log a dependency going down once, and coming back once with how many calls failed meanwhile.

Logging every failed call of an outage buries the one line that matters (a notification service
that is not running made 67 warnings in 75 s); logging none hides it. Each process keeps one
`DependencyWatch` per dependency: the first failure after a success is a WARNING with its reason,
later failures are counted (and logged at DEBUG), and the first success after them is an INFO line
with the count and how long it lasted.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class DependencyWatch:
    """Whether one dependency is currently failing, as seen by this process."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        """`name` as logs say it (e.g. "notification service"); `logger` the caller's module logger."""
        self.name = name
        self._logger = logger
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down_since is not None

    def failed(self, reason: str, **context: Any) -> None:
        """Record one failed call: a WARNING if it is the first of an outage, else counted quietly."""
        with self._lock:
            self._failures += 1
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        extra = {"dependency": self.name, "reason": reason, **context}
        if first:
            self._logger.warning(
                f"{self.name} unavailable; further failures are counted until it answers again", extra=extra
            )
        else:
            self._logger.debug(f"{self.name} still unavailable", extra=extra)

    def succeeded(self) -> None:
        """Record one successful call: an INFO line if it ends an outage, with its count and length."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = round(time.monotonic() - self._down_since, 3)
            failures, self._failures, self._down_since = self._failures, 0, None
        self._logger.info(
            f"{self.name} available again",
            extra={"dependency": self.name, "failed_calls": failures, "outage_seconds": seconds},
        )
