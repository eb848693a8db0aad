"""Scenario 4: the notification service is down (connections refused) for 30 s under load."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable

from tests.fakes import FakeNotificationService, fake_notification_service
from tests.faults.load import ChargeClients, Ledger, Verdict, check_against_database, keys_in_flight
from tests.helpers import Gunicorn, closed_port, outbox_undelivered, query_rows, wait_until

OUTAGE_SECONDS = 30
OUTBOX_STATES = "SELECT status, count(*), max(attempts) FROM notification_outbox GROUP BY status"


def outbox_ids(dsn: str) -> set[str]:
    return {row[0] for row in query_rows(dsn, "SELECT notification_id FROM notification_outbox")}


def charge_seconds(ledger: Ledger, start: float, end: float) -> list[float]:
    """Latencies of acknowledged charges sent within [start, end), sorted."""
    return sorted(a.seconds for a in ledger.attempts if start <= a.started < end and a.status in (201, 202))


def p95(values: list[float]) -> float:
    return values[int(len(values) * 0.95)]


def test_a_notification_outage_slows_no_charge_and_every_notification_arrives_exactly_once(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    report: Callable[[Verdict], None],
) -> None:
    port = closed_port()
    notifications = FakeNotificationService()
    with fake_notification_service(port, notifications):
        # A 4 s backoff cap (default 300 s) keeps the wait after the outage short for the test. With
        # that cap, the default 10 attempts can all be spent in ~16 s; 30 attempts last at least ~57 s,
        # as the defaults (10 attempts, at least ~4 minutes) outlast a 30 s outage in production.
        server = fault_server(
            NOTIFICATION_SERVICE_URL=f"http://127.0.0.1:{port}", NOTIFY_BACKOFF_MAX=4, NOTIFY_MAX_ATTEMPTS=30
        )
        started = time.monotonic()
        clients = ChargeClients(server.url, count=4).start()
        time.sleep(6)  # the baseline: charges while the service is up
    down_from = time.monotonic()  # the fake stopped listening: connections are refused
    time.sleep(OUTAGE_SECONDS)  # the service stays down this long
    with fake_notification_service(port, notifications):
        up_at = time.monotonic()
        time.sleep(2)  # charges go on a little after the service is back
        ledger = clients.stop()
        wait_until(lambda: outbox_undelivered(fault_dsn) == 0, timeout=60, interval=0.25)
        drained_after = time.monotonic() - up_at
    # Nothing to wait for: a quiet half second in which a send in flight when the service stopped
    # would show up as a late duplicate.
    time.sleep(0.5)

    present, duplicates, orphans = check_against_database(fault_dsn, ledger)
    received = Counter(n["notification_id"] for n in notifications.received)
    twice = {nid: count for nid, count in received.items() if count > 1}
    baseline = charge_seconds(ledger, started + 1, down_from)
    during = charge_seconds(ledger, down_from, up_at)
    report(
        Verdict(
            "4. notification service down, 30 s", len(ledger.attempts), len(ledger.acknowledged), present,
            duplicates, orphans, sum(k.stuck for k in ledger.keys), len(ledger.server_errors(503)),
            len(ledger.other_5xx()), drained_after,
            f"charge p50/p95 {statistics.median(baseline) * 1000:.1f}/{p95(baseline) * 1000:.1f} ms before, "
            f"{statistics.median(during) * 1000:.1f}/{p95(during) * 1000:.1f} ms during the outage; "
            f"{len(received)} notifications delivered, {len(twice)} twice; recovery = outbox drained",
        )
    )  # fmt: skip

    assert ledger.server_errors() == []
    assert all(k.status in (201, 202) for k in ledger.keys)
    assert present == len(ledger.acknowledged)
    assert (duplicates, orphans) == (0, 0)
    assert keys_in_flight(fault_dsn) == 0
    # Charges never wait for the notification service (they only write the outbox row).
    assert len(during) > 100
    assert statistics.median(during) <= 2 * statistics.median(baseline) + 0.01
    assert p95(during) <= 2 * p95(baseline) + 0.02
    assert outbox_undelivered(fault_dsn) == 0, query_rows(fault_dsn, OUTBOX_STATES)
    expected = {f"payment-{k.payment_id}-{k.payment_status.lower()}" for k in ledger.acknowledged}
    assert set(received) == expected == outbox_ids(fault_dsn)
    assert twice == {}
