"""DependencyWatch: an outage is one warning when it begins and one line with its count when it ends."""

from __future__ import annotations

import logging
import threading

import pytest

from utils.outage import DependencyWatch

LOGGER = logging.getLogger("tests.outage")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER.name and r.levelno >= logging.INFO]


def test_fifty_failures_are_one_warning_and_the_recovery_one_line_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER.name)
    watch = DependencyWatch("notification service", LOGGER)

    for _ in range(50):
        watch.failed("ConnectionError")
    assert watch.down
    watch.succeeded()
    watch.succeeded()

    assert lines(caplog) == [
        (logging.WARNING, "notification service unavailable; further failures are counted until it answers again"),
        (logging.INFO, "notification service available again"),
    ]
    recovered = next(r for r in caplog.records if r.levelno == logging.INFO)
    assert recovered.failed_calls == 50 and recovered.outage_seconds >= 0
    assert not watch.down


def test_a_second_outage_is_reported_again_with_its_own_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    watch = DependencyWatch("trip service", LOGGER)

    for count in (3, 2):
        for _ in range(count):
            watch.failed("HTTP 503")
        watch.succeeded()

    assert [level for level, _ in lines(caplog)] == [logging.WARNING, logging.INFO] * 2
    assert [r.failed_calls for r in caplog.records if r.levelno == logging.INFO] == [3, 2]


def test_threads_failing_together_make_one_warning_and_every_failure_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    watch = DependencyWatch("database", LOGGER)
    start = threading.Barrier(8)

    def fail() -> None:
        start.wait()
        for _ in range(100):
            watch.failed("connection refused")

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    watch.succeeded()

    assert [level for level, _ in lines(caplog)] == [logging.WARNING, logging.INFO]
    assert [r.failed_calls for r in caplog.records if r.levelno == logging.INFO] == [800]
