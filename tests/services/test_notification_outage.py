"""The notification service down while 100 charges are made: nothing waits, nothing is lost, nothing repeats."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeNotificationService, FakeTripService
from tests.helpers import wait_until

CHARGES = 100


def test_an_outage_delays_no_charge_and_every_notification_arrives_once_afterwards(
    serve_gunicorn: Callable[..., str],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    for n in range(CHARGES):
        trips.trip(7000 + n, distance_km=3)
    url = serve_gunicorn(
        TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, GATEWAY_SUCCESS_RATE=1.0,
        NOTIFY_BACKOFF_BASE=0.2, NOTIFY_BACKOFF_MAX=1.0, NOTIFY_POLL_INTERVAL=0.2, NOTIFY_MAX_ATTEMPTS=50,
    )  # fmt: skip
    # Warm the workers (modules, validators, connections) with charges of unknown trips: answered 400
    # with nothing written, so the timing below measures charges, not a cold start (2-3 s under load).
    with ThreadPoolExecutor(max_workers=8) as pool:
        warm = [{"idempotency_key": f"warm-{n}", "trip_id": 900_000 + n, "method": "CARD"} for n in range(16)]
        statuses = list(pool.map(lambda body: requests.post(f"{url}/v1/payments/charge", json=body, timeout=10), warm))
    assert {response.json()["code"] for response in statuses} == {"trip_not_found"}
    notifications.fail_with = 503  # the notification service is down

    def charge(n: int) -> tuple[int, float]:
        started = time.monotonic()
        body = {"idempotency_key": f"outage-{n}", "trip_id": 7000 + n, "method": "CARD"}
        response = requests.post(f"{url}/v1/payments/charge", json=body, timeout=10)
        return response.status_code, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(charge, range(CHARGES)))

    assert [status for status, _ in results] == [201] * CHARGES
    # Answered without waiting for the notification service (it is only ever called in the background).
    assert max(seconds for _, seconds in results) < 2.0
    # Every notification has been tried and refused at least once; none got through.
    assert wait_until(lambda: _refused(db) == CHARGES, timeout=15)
    assert notifications.received == []
    backlog = _gauge(url, "notification_outbox_backlog")
    assert backlog == CHARGES

    notifications.fail_with = None  # back up
    delivered = notifications.wait_for(CHARGES, timeout=30)
    # Nothing to wait for: a quiet second in which a second send of any notification would arrive.
    time.sleep(1.0)

    ids = Counter(notifications.keys)
    assert len(delivered) == CHARGES
    assert len(ids) == CHARGES and set(ids.values()) == {1}
    assert {n["notification_id"] for n in notifications.received} == set(ids)
    with db.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM notification_outbox GROUP BY 1")
        assert cur.fetchall() == [("DELIVERED", CHARGES)]
    assert _gauge(url, "notification_outbox_backlog") == 0


def _refused(db: psycopg2.extensions.connection) -> int:
    """Outbox rows whose delivery was attempted and failed (they carry the error)."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM notification_outbox WHERE last_error IS NOT NULL")
        return cur.fetchone()[0]


def _gauge(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics/prometheus", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return family.samples[0].value
    raise AssertionError(f"{name} not exposed")
