"""A pass run every N seconds in a daemon thread, as the reconciliation and housekeeping loops run."""

from __future__ import annotations

import threading
from collections.abc import Callable

from database.pool import UNMIGRATED_ERRORS, DatabaseUnavailableError, unmigrated_reason
from utils.logger import get_logger
from utils.outage import DependencyWatch

logger = get_logger(__name__)


class PeriodicTask:
    """Runs `run_pass` every `interval` seconds until stopped; a pass that fails never ends the loop."""

    def __init__(self, name: str, interval: float, run_pass: Callable[[], None]) -> None:
        """`name` names the thread and the log lines; an interval of 0 or less means never start."""
        self.name = name
        self.interval = interval
        self._run_pass = run_pass
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.schema = DependencyWatch("database schema", logger)

    def start(self) -> None:
        """Start the thread (once; not at all when the interval is 0)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self.stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Pass after pass until stopped; an outage skips a pass."""
        while not self.stopping.wait(self.interval):
            try:
                self._run_pass()
            except DatabaseUnavailableError:
                logger.warning("background pass skipped: database unavailable", extra={"task": self.name})
            except UNMIGRATED_ERRORS as exc:
                self.schema.failed(unmigrated_reason(exc), task=self.name)
            except Exception:
                logger.exception("background pass failed", extra={"task": self.name})
            else:
                self.schema.succeeded()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the pass in progress."""
        self.stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
