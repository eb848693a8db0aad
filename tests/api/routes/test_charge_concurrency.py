"""Charges under real concurrency: many parallel requests against gunicorn with two workers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import requests

from tests.fakes import FakeNotificationService, FakeTripService

PARALLEL = 50


def fire_together(url: str, bodies: list[dict]) -> list[requests.Response]:
    """POST every body at once (released by a barrier) and return the responses in order."""
    barrier = threading.Barrier(len(bodies))

    def send(body: dict) -> requests.Response:
        with requests.Session() as session:
            barrier.wait()
            return session.post(f"{url}/v1/payments/charge", json=body, timeout=30)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def payments_for_trip(db: psycopg2.extensions.connection, trip_id: int) -> list[tuple[int, str]]:
    with db.cursor() as cur:
        cur.execute("SELECT payment_id, status FROM payments WHERE trip_id = %s ORDER BY payment_id", (trip_id,))
        return cur.fetchall()


def test_parallel_identical_charges_create_one_payment_and_agree(
    serve_gunicorn: Callable[..., str],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    trips.answer(101, 200, {"status": "COMPLETED", "distance_km": 10.5}, delay=0.05)  # widen the race window
    url = serve_gunicorn(TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url,
                         GATEWAY_SUCCESS_RATE=0.5)  # fmt: skip
    body = {"idempotency_key": "same-key", "trip_id": 101, "method": "CARD"}

    responses = fire_together(url, [body] * PARALLEL)
    retry = requests.post(f"{url}/v1/payments/charge", json=body, timeout=10)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 202, 409}, statuses
    in_use = [r for r in responses if r.status_code == 409]
    assert all(r.json()["code"] == "idempotency_key_in_use" and r.headers["Retry-After"] for r in in_use)
    finished = [r for r in responses if r.status_code in (201, 202)]
    assert finished, statuses
    assert len({r.content for r in finished}) == 1  # the original and every replay: the same bytes
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in finished) == 1
    assert retry.status_code == finished[0].status_code
    assert retry.content == finished[0].content
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(payments_for_trip(db, 101)) == 1
    assert trips.calls[101] == 1  # only the request that held the key reached the trip service


def test_parallel_charges_for_one_trip_with_different_keys_pay_it_once(
    serve_gunicorn: Callable[..., str],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    trips.answer(202, 200, {"status": "COMPLETED", "distance_km": 4}, delay=0.02)
    url = serve_gunicorn(TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url,
                         GATEWAY_SUCCESS_RATE=1.0)  # fmt: skip
    bodies = [{"idempotency_key": f"key-{i}", "trip_id": 202, "method": "UPI"} for i in range(PARALLEL)]

    responses = fire_together(url, bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: PARALLEL - 1}, statuses
    paid = next(r.json() for r in responses if r.status_code == 201)
    conflicts = [r.json() for r in responses if r.status_code == 409]
    assert {c["code"] for c in conflicts} == {"trip_already_paid"}
    assert {c["payment_id"] for c in conflicts} == {paid["payment_id"]}
    assert payments_for_trip(db, 202) == [(paid["payment_id"], "SUCCESS")]


def test_parallel_charges_with_a_declining_gateway_leave_at_most_one_live_payment(
    serve_gunicorn: Callable[..., str],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(303, distance_km=2)
    url = serve_gunicorn(TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url,
                         GATEWAY_SUCCESS_RATE=0.3)  # fmt: skip
    bodies = [{"idempotency_key": f"key-{i}", "trip_id": 303, "method": "CARD"} for i in range(PARALLEL)]

    responses = fire_together(url, bodies)

    assert {r.status_code for r in responses} <= {201, 202, 409}, [r.text for r in responses if r.status_code >= 500]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "trip_already_paid"
        elif response.status_code == 202:
            assert response.json()["status"] == "FAILED"
    rows = payments_for_trip(db, 303)
    live = [row for row in rows if row[1] != "FAILED"]
    assert len(live) <= 1
    assert len(rows) == sum(r.status_code in (201, 202) for r in responses)
