"""Two service instances (separate gunicorn masters) sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import psycopg2
import requests

from tests.fakes import FakeNotificationService, FakeTripService


def test_one_idempotency_key_sent_to_both_instances_makes_one_payment(
    serve_gunicorn: Callable[..., str],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    trips.answer(101, 200, {"status": "COMPLETED", "distance_km": 10.5}, delay=0.05)
    common = {"TRIP_SERVICE_URL": trips.url, "NOTIFICATION_SERVICE_URL": notifications.url,
              "GATEWAY_SUCCESS_RATE": 1.0}  # fmt: skip
    instances = [serve_gunicorn(**common), serve_gunicorn(**common)]
    body = {"idempotency_key": "shared-key", "trip_id": 101, "method": "CARD"}
    barrier = threading.Barrier(20)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def send(url: str) -> None:
        barrier.wait()
        response = requests.post(f"{url}/v1/payments/charge", json=body, timeout=30)
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send, args=(instances[n % 2],)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replays = [requests.post(f"{url}/v1/payments/charge", json=body, timeout=10) for url in instances]

    assert {r.status_code for r in responses} <= {201, 409}
    assert all(r.json()["code"] == "idempotency_key_in_use" for r in responses if r.status_code == 409)
    assert len({r.content for r in responses + replays if r.status_code == 201}) == 1
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments WHERE trip_id = 101")
        assert cur.fetchone()[0] == 1


def test_a_rate_limit_in_redis_is_shared_by_both_instances(
    serve_gunicorn: Callable[..., str], own_redis: tuple[str, object]
) -> None:
    uri, _ = own_redis
    settings = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "5 per minute", "RATE_LIMIT_STORAGE_URI": uri}
    instances = [serve_gunicorn(**settings), serve_gunicorn(**settings)]

    statuses = Counter(requests.get(f"{instances[n % 2]}/v1/payments", timeout=5).status_code for n in range(8))

    assert statuses == {200: 5, 429: 3}
