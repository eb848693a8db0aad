"""Rate limits: config strings really used, per client, 429 with headers, shared through Redis, fail open."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable

import psycopg2
import pytest
import requests
from flask import Flask

from tests.fakes import FakeNotificationService, FakeTripService
from tests.helpers import closed_port, row_counts


@pytest.fixture
def limited_app(make_app: Callable[..., Flask], trips: FakeTripService, notifications: FakeNotificationService):
    """Factory: an app with the given rate-limit overrides, wired to the fakes."""

    def build(**overrides: object) -> Flask:
        return make_app(
            TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, GATEWAY_SUCCESS_RATE=1.0,
            **overrides,
        )  # fmt: skip

    return build


def charge_body(n: int, key: str | None = None) -> dict:
    return {"idempotency_key": key or f"rl-{n}", "trip_id": 1000 + n, "method": "CARD"}


def test_the_configured_charge_limit_answers_429_with_headers_and_stores_nothing(
    limited_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    for n in range(4):
        trips.trip(1000 + n)
    client = limited_app(RATE_LIMIT_CHARGE="3 per minute").test_client()

    responses = [client.post("/v1/payments/charge", json=charge_body(n)) for n in range(4)]

    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert [r.headers["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    limited = responses[3]
    assert limited.get_json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 60
    assert row_counts(db)["idempotency_keys"] == 3  # the 429'd request consumed no key
    assert trips.calls.get(1003) is None


def test_a_rate_limited_charge_succeeds_with_the_same_key_after_the_window(
    limited_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    trips.trip(1000)
    trips.trip(1001)
    client = limited_app(RATE_LIMIT_CHARGE="1 per 1 second").test_client()
    client.post("/v1/payments/charge", json=charge_body(0))

    limited = client.post("/v1/payments/charge", json=charge_body(1, key="retry-me"))
    time.sleep(1.1)  # the 1 s window runs out (a duration: nothing to wait for but the clock)
    retried = client.post("/v1/payments/charge", json=charge_body(1, key="retry-me"))

    assert limited.status_code == 429
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers


def test_refunds_and_other_routes_have_their_own_limits(limited_app: Callable[..., Flask], insert_payment) -> None:
    payment_id = insert_payment()
    client = limited_app(RATE_LIMIT_REFUND="1 per minute", RATE_LIMIT_DEFAULT="2 per minute").test_client()

    refunds = [client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 1}).status_code for _ in range(2)]
    reads = [client.get("/v1/payments").status_code for _ in range(3)]

    assert refunds == [200, 429]
    assert reads == [200, 200, 429]


def test_probes_are_never_limited(limited_app: Callable[..., Flask]) -> None:
    client = limited_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()

    statuses = {client.get(path).status_code for path in ["/", "/health", "/ready", "/live"] * 3}

    assert statuses == {200}
    assert "RateLimit-Limit" not in client.get("/live").headers


def test_each_api_key_has_its_own_budget(limited_app: Callable[..., Flask]) -> None:
    import hashlib

    keys = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("alpha", "beta")}
    client = limited_app(API_KEYS=keys, RATE_LIMIT_DEFAULT="2 per minute").test_client()

    alpha = [client.get("/v1/payments", headers={"X-API-Key": "alpha"}).status_code for _ in range(3)]
    beta = [client.get("/v1/payments", headers={"X-API-Key": "beta"}).status_code for _ in range(2)]

    assert alpha == [200, 200, 429]
    assert beta == [200, 200]


def test_without_keys_clients_are_told_apart_by_address(limited_app: Callable[..., Flask]) -> None:
    client = limited_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()

    first = client.get("/v1/payments", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    second = client.get("/v1/payments", environ_base={"REMOTE_ADDR": "10.0.0.2"})
    again = client.get("/v1/payments", environ_base={"REMOTE_ADDR": "10.0.0.1"})

    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


def test_forwarded_for_counts_only_behind_a_trusted_proxy(limited_app: Callable[..., Flask]) -> None:
    untrusted = limited_app(RATE_LIMIT_DEFAULT="1 per minute").test_client()
    trusted = limited_app(RATE_LIMIT_DEFAULT="1 per minute", TRUSTED_PROXY_COUNT=1).test_client()

    def get(client: object, forwarded: str) -> int:
        return client.get("/v1/payments", headers={"X-Forwarded-For": forwarded}).status_code  # type: ignore[attr-defined]

    # Untrusted: a forged header does not buy a fresh budget.
    assert [get(untrusted, "1.1.1.1"), get(untrusted, "2.2.2.2")] == [200, 429]
    # Trusted proxy: each forwarded client counts on its own.
    assert [get(trusted, "1.1.1.1"), get(trusted, "2.2.2.2"), get(trusted, "1.1.1.1")] == [200, 200, 429]


def test_disabled_limits_never_answer_429(limited_app: Callable[..., Flask]) -> None:
    client = limited_app(RATE_LIMIT_ENABLED=False, RATE_LIMIT_DEFAULT="1 per minute").test_client()

    assert {client.get("/v1/payments").status_code for _ in range(5)} == {200}


def test_an_unreachable_store_fails_open(limited_app: Callable[..., Flask]) -> None:
    app = limited_app(RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{closed_port()}", RATE_LIMIT_DEFAULT="1 per minute")
    client = app.test_client()

    statuses = [client.get("/v1/payments").status_code for _ in range(5)]

    assert statuses == [200] * 5
    # The store was asked once: after that failure the limiter skips it instead of paying a timeout per request.
    assert app.extensions["rate_limiter"].store_failures == 1


# --- shared limits across gunicorn workers, through a Redis server of the test's own -------------


def test_redis_shares_one_budget_across_gunicorn_workers(
    serve_gunicorn: Callable[..., str],
    own_redis: tuple[str, subprocess.Popen[bytes]],
    trips: FakeTripService,
    notifications: FakeNotificationService,
) -> None:
    import hashlib

    uri, _ = own_redis
    for n in range(16):
        trips.trip(1000 + n)
    keys = ",".join(f"{name}:sha256:{hashlib.sha256(name.encode()).hexdigest()}" for name in ("one", "two"))
    url = serve_gunicorn(
        workers=2, threads=2, TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url,
        GATEWAY_SUCCESS_RATE=1.0, RATE_LIMIT_ENABLED="true", RATE_LIMIT_CHARGE="5 per minute",
        RATE_LIMIT_STORAGE_URI=uri, API_KEYS=keys,
    )  # fmt: skip

    def charge(n: int, key: str) -> requests.Response:
        # A new connection per request, so the two workers both take part.
        return requests.post(f"{url}/v1/payments/charge", json=charge_body(n), headers={"X-API-Key": key},
                             timeout=10)  # fmt: skip

    first = Counter(charge(n, "one").status_code for n in range(8))
    second = Counter(charge(n, "two").status_code for n in range(8, 16))

    assert first == {201: 5, 429: 3}
    assert second == {201: 5, 429: 3}


def test_service_keeps_serving_when_redis_stops(
    serve_gunicorn: Callable[..., str], own_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    uri, process = own_redis
    url = serve_gunicorn(RATE_LIMIT_ENABLED="true", RATE_LIMIT_STORAGE_URI=uri, RATE_LIMIT_DEFAULT="1000 per minute")
    assert requests.get(f"{url}/v1/payments", timeout=5).headers["RateLimit-Limit"] == "1000"

    process.kill()
    process.wait(timeout=10)
    statuses = [requests.get(f"{url}/v1/payments", timeout=5).status_code for _ in range(20)]

    assert statuses == [200] * 20


def test_options_and_head_never_spend_a_budget(
    limited_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(1000)
    app = limited_app(RATE_LIMIT_CHARGE="3 per minute", RATE_LIMIT_DEFAULT="3 per minute")
    client = app.test_client()

    preflights = [client.options("/v1/payments/charge").status_code for _ in range(60)]
    heads = [client.head("/v1/payments/charge").status_code for _ in range(60)]
    list_heads = [client.head("/v1/payments").status_code for _ in range(60)]
    list_options = [client.options("/v1/payments").status_code for _ in range(60)]
    charge = client.post("/v1/payments/charge", json=charge_body(0))
    listing = client.get("/v1/payments")

    assert 429 not in preflights + heads + list_heads + list_options
    assert set(list_heads) == {200}
    # The first real request of each budget is the first one counted.
    assert charge.status_code == 201 and charge.headers["RateLimit-Remaining"] == "2"
    assert listing.status_code == 200 and listing.headers["RateLimit-Remaining"] == "2"
    limiter = app.extensions["rate_limiter"]
    for name in ("charge", "default"):
        item = limiter.items[name]
        assert limiter._strategy.get_window_stats(item, name, "ip:127.0.0.1").remaining == item.amount - 1
    assert row_counts(db)["payments"] == 1
