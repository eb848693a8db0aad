"""POST /v1/payments/charge through the app, with real-HTTP fake trip and notification services."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.services import services
from database.pool import ConnectionPool
from services.gateways import GATEWAY_ERROR_CODES, GatewayCharge, GatewayResult
from tests.fakes import FakeNotificationService, FakeTripService
from tests.gateways import CountingGateway, StubGateway, simulator, use_gateway
from tests.helpers import closed_port, row_counts, wait_until

PAYMENT_KEYS = {
    "payment_id", "trip_id", "rider_id", "driver_id", "amount", "currency", "method", "status",
    "reference", "amount_refunded", "gateway", "gateway_reference", "created_at", "updated_at",
}  # fmt: skip


def charge(client: FlaskClient, key: str | None = "key-1", headers: dict | None = None, **fields: Any):
    body = {"trip_id": 101, "method": "CARD", **fields}
    if key is not None:
        body["idempotency_key"] = key
    return client.post("/v1/payments/charge", json=body, headers=headers or {})


def all_empty(db: psycopg2.extensions.connection) -> bool:
    return all(count == 0 for count in row_counts(db).values())


# --- the happy paths ------------------------------------------------------------------------------


def test_completed_trip_is_charged_201_with_fare_and_payment_object(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=10.5)

    response = charge(charge_client, rider_id=7, driver_id=9)

    assert response.status_code == 201
    body = response.get_json()
    assert set(body) >= PAYMENT_KEYS
    assert (body["trip_id"], body["rider_id"], body["driver_id"]) == (101, 7, 9)
    assert (body["amount"], body["currency"], body["method"], body["status"]) == (31.25, "INR", "CARD", "SUCCESS")
    assert body["amount_refunded"] == 0.0
    assert body["reference"].startswith("PAY-")
    assert body["fare"] == {
        "type": "TRIP", "base_fare": 5.0, "distance_km": 10.5, "rate_per_km": 2.5, "surge_multiplier": 1.0,
        "amount": 31.25,
    }  # fmt: skip
    assert body["message"] and body["timestamp"].endswith("+00:00")
    assert "error_code" not in body
    assert "Idempotent-Replayed" not in response.headers
    with db.cursor() as cur:
        cur.execute("SELECT status, amount FROM payments WHERE payment_id = %s", (body["payment_id"],))
        assert cur.fetchone() == ("SUCCESS", Decimal("31.25"))


@pytest.mark.parametrize(
    ("trip_fields", "expected_amount", "fare_type"),
    [
        ({"distance_km": 3.333, "surge_level": "HIGH"}, 20.0, "TRIP"),
        ({"distance_km": 0.002, "surge_multiplier": 1.0}, 5.01, "TRIP"),
        ({"distance_km": None, "distance": 12, "surge_level": "medium"}, 42.0, "TRIP"),
        ({"status": "CANCELLED", "distance_km": None}, 3.0, "CANCELLATION"),
        ({"status": "cancelled", "distance_km": 4}, 3.0, "CANCELLATION"),
    ],
)
def test_the_trip_decides_the_fare(
    charge_client: FlaskClient,
    trips: FakeTripService,
    trip_fields: dict,
    expected_amount: float,
    fare_type: str,
) -> None:
    trips.trip(101, **{"status": "COMPLETED", **trip_fields})

    body = charge(charge_client).get_json()

    assert (body["amount"], body["fare"]["type"]) == (expected_amount, fare_type)


def test_a_client_amount_replaces_the_fare_but_the_trip_is_still_checked(
    charge_client: FlaskClient, trips: FakeTripService
) -> None:
    trips.trip(101)

    body = charge(charge_client, amount=150.5).get_json()

    assert (body["amount"], body["fare"]["type"]) == (150.5, "CLIENT_AMOUNT")
    assert trips.calls[101] == 1


def test_a_declined_card_is_202_failed_with_an_error_code(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    use_gateway(charge_app, simulator(charge_app, 0.0))
    trips.trip(101)

    response = charge(charge_app.test_client())

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "FAILED"
    assert body["error_code"] in GATEWAY_ERROR_CODES
    with db.cursor() as cur:
        cur.execute("SELECT status, error_code FROM payments")
        assert cur.fetchone() == ("FAILED", body["error_code"])


def test_cash_always_succeeds_even_when_the_gateway_declines_everything(
    charge_app: Flask, trips: FakeTripService
) -> None:
    use_gateway(charge_app, simulator(charge_app, 0.0))
    trips.trip(101)

    response = charge(charge_app.test_client(), method="cash")

    assert (response.status_code, response.get_json()["status"], response.get_json()["method"]) == (
        201, "SUCCESS", "CASH",
    )  # fmt: skip


def test_an_undecided_gateway_is_202_pending(charge_app: Flask, trips: FakeTripService) -> None:
    use_gateway(charge_app, simulator(charge_app, 1.0, pending_rate=1.0))
    trips.trip(101)

    response = charge(charge_app.test_client())

    assert (response.status_code, response.get_json()["status"]) == (202, "PENDING")


def test_a_gateway_that_crashes_leaves_the_payment_pending(charge_app: Flask, trips: FakeTripService) -> None:
    class Exploding(StubGateway):
        def authorize(self, charge: GatewayCharge) -> GatewayResult:
            raise TimeoutError("gateway timed out")

    use_gateway(charge_app, Exploding())
    trips.trip(101)

    response = charge(charge_app.test_client())

    assert (response.status_code, response.get_json()["status"]) == (202, "PENDING")


def test_a_failed_payment_does_not_block_a_new_attempt(charge_app: Flask, trips: FakeTripService) -> None:
    trips.trip(101)
    use_gateway(charge_app, simulator(charge_app, 0.0))
    first = charge(charge_app.test_client(), key="attempt-1")
    use_gateway(charge_app, simulator(charge_app, 1.0))

    second = charge(charge_app.test_client(), key="attempt-2")

    assert first.get_json()["status"] == "FAILED"
    assert (second.status_code, second.get_json()["status"]) == (201, "SUCCESS")


def test_a_paid_trip_answers_409_trip_already_paid_with_the_payment_id(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    paid = charge(charge_client, key="first").get_json()

    response = charge(charge_client, key="second")
    again = charge(charge_client, key="second")

    assert response.status_code == 409
    assert response.get_json()["code"] == "trip_already_paid"
    assert response.get_json()["payment_id"] == paid["payment_id"]
    assert again.get_json()["code"] == "trip_already_paid"  # the key was released, not left in use
    assert row_counts(db)["payments"] == 1
    assert row_counts(db)["idempotency_keys"] == 1


def test_the_rider_is_notified_with_a_stable_id(
    charge_client: FlaskClient, trips: FakeTripService, notifications: FakeNotificationService
) -> None:
    trips.trip(101)

    body = charge(charge_client, rider_id=7, driver_id=9).get_json()

    (note,) = notifications.wait_for(1)
    assert note["type"] == "payment"
    assert (note["payment_id"], note["trip_id"], note["rider_id"], note["driver_id"]) == (body["payment_id"], 101, 7, 9)
    assert (note["status"], note["amount"], note["currency"]) == ("SUCCESS", 31.25, "INR")
    assert note["notification_id"] and notifications.keys == [note["notification_id"]]


def test_a_slow_or_failing_notification_service_never_delays_or_fails_the_charge(
    charge_client: FlaskClient, trips: FakeTripService, notifications: FakeNotificationService
) -> None:
    trips.trip(101)
    trips.trip(102)
    notifications.delay = 2.0
    notifications.fail_with = 503

    started = time.monotonic()
    first = charge(charge_client, key="a", trip_id=101)
    second = charge(charge_client, key="b", trip_id=102)

    assert (first.status_code, second.status_code) == (201, 201)
    # Waiting on the notification service would cost each charge at least its 1 s read timeout.
    assert time.monotonic() - started < 2 * 1.0


def test_charges_succeed_when_the_notification_service_is_unreachable(
    make_app: Callable[..., Flask], trips: FakeTripService
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url,
        NOTIFICATION_SERVICE_URL=f"http://127.0.0.1:{closed_port()}",
        GATEWAY_SUCCESS_RATE=1.0,
    )
    trips.trip(101)

    assert charge(app.test_client()).status_code == 201


# --- the trip check -------------------------------------------------------------------------------


# A trip answer whose extra field nests deeper than Python's parser can follow.
DEEP_TRIP = b'{"status": "COMPLETED", "distance_km": 3, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        (lambda t: t.trip(101, status="ONGOING"), 400, "trip_not_completed"),
        (lambda t: t.trip(101, status="REQUESTED", distance_km=None), 400, "trip_not_completed"),
        (lambda t: None, 400, "trip_not_found"),
        (lambda t: t.answer(101, 500, {"error": "boom"}), 503, "trip_service_unavailable"),
        (lambda t: t.answer(101, 503, raw=b"busy"), 503, "trip_service_unavailable"),
        (lambda t: t.answer(101, 200, raw=b"<html>"), 502, "trip_service_bad_response"),
        (lambda t: t.answer(101, 200, {"distance_km": 3}), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, distance_km=None), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, distance_km="far"), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, distance_km=-1), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, surge_level="EXTREME"), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, surge_multiplier=0), 502, "trip_service_bad_response"),
        (lambda t: t.answer(101, 401, {"error": "who are you"}), 502, "trip_service_bad_response"),
        (
            lambda t: t.answer(101, 200, {"trip_id": 1, "status": "COMPLETED", "distance_km": 3}),
            502,
            "trip_service_bad_response",
        ),
        (lambda t: t.trip(101, rider_id=-3), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, rider_id=True), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, driver_id=2**63), 502, "trip_service_bad_response"),
        (lambda t: t.trip(101, driver_id="9"), 502, "trip_service_bad_response"),
        (lambda t: t.answer(101, 200, raw=DEEP_TRIP), 502, "trip_service_bad_response"),
    ],
)
def test_trip_problems_are_answered_and_nothing_is_stored(
    charge_client: FlaskClient,
    trips: FakeTripService,
    db: psycopg2.extensions.connection,
    setup: Callable[[FakeTripService], None],
    status: int,
    code: str,
) -> None:
    setup(trips)

    response = charge(charge_client)

    assert response.status_code == status
    assert response.get_json()["code"] == code
    assert all_empty(db)


def test_not_completed_names_the_trip_and_its_status(charge_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101, status="ONGOING")

    body = charge(charge_client).get_json()

    assert (body["trip_id"], body["trip_status"]) == (101, "ONGOING")


def test_the_same_key_succeeds_once_the_trip_completes(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="ONGOING")
    assert charge(charge_client, key="k").status_code == 400
    trips.answer(101, 500)
    assert charge(charge_client, key="k").status_code == 503

    trips.trip(101, status="COMPLETED")
    response = charge(charge_client, key="k")

    assert response.status_code == 201
    assert row_counts(db)["payments"] == 1


def test_a_hanging_trip_service_is_503_within_the_read_timeout_plus_a_second(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.answer(101, 200, {"status": "COMPLETED", "distance_km": 1}, delay=3.0)  # read timeout is 1 s

    started = time.monotonic()
    response = charge(charge_client)
    elapsed = time.monotonic() - started

    assert (response.status_code, response.get_json()["code"]) == (503, "trip_service_unavailable")
    assert elapsed < 1.0 + 1.0
    assert all_empty(db)


def test_calls_beyond_the_trip_service_bulkhead_fail_fast_instead_of_waiting_on_a_hung_service(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url, HTTP_READ_TIMEOUT=2.0, TRIP_SERVICE_MAX_CONCURRENCY=1,
        TRIP_SERVICE_QUEUE_TIMEOUT=0.1, GATEWAY_SUCCESS_RATE=1.0,
    )  # fmt: skip
    trips.answer(101, 200, {"status": "COMPLETED", "distance_km": 1}, delay=3.0)
    trips.trip(102)
    hung = threading.Thread(target=lambda: charge(app.test_client(), key="k-1", trip_id=101))
    hung.start()
    assert wait_until(lambda: trips.calls.get(101) == 1, timeout=5)  # the hung call holds the only slot

    started = time.monotonic()
    response = charge(app.test_client(), key="k-2", trip_id=102)
    elapsed = time.monotonic() - started
    hung.join()

    assert (response.status_code, response.get_json()["code"]) == (503, "trip_service_unavailable")
    assert elapsed < 1.0  # the queue timeout, not the 2 s read timeout
    assert trips.calls.get(102) is None
    assert charge(app.test_client(), key="k-2", trip_id=102).status_code == 201  # the slot is free again


def test_a_failing_trip_service_opens_the_circuit_and_charges_fail_without_calling_it(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url, TRIP_SERVICE_BREAKER_THRESHOLD=3, TRIP_SERVICE_BREAKER_RESET=0.5,
        GATEWAY_SUCCESS_RATE=1.0,
    )  # fmt: skip
    trips.answer(101, 500, {"error": "boom"})
    for n in range(3):
        assert charge(app.test_client(), key=f"k-{n}").status_code == 503
    assert trips.calls[101] == 3

    refused = charge(app.test_client(), key="k-3")

    assert (refused.status_code, refused.get_json()["code"]) == (503, "trip_service_unavailable")
    assert trips.calls[101] == 3  # the circuit is open: not asked again
    trips.trip(101)
    time.sleep(0.6)  # the 0.5 s reset period runs out (a duration: the breaker has nothing to wait for)
    recovered = charge(app.test_client(), key="k-4")  # the trial call after the reset time
    assert recovered.status_code == 201
    assert trips.calls[101] == 4
    assert row_counts(db)["payments"] == 1


def test_an_unreachable_trip_service_is_503(make_app: Callable[..., Flask], db: psycopg2.extensions.connection) -> None:
    app = make_app(TRIP_SERVICE_URL=f"http://127.0.0.1:{closed_port()}", GATEWAY_SUCCESS_RATE=1.0)

    response = charge(app.test_client())

    assert (response.status_code, response.get_json()["code"]) == (503, "trip_service_unavailable")
    assert all_empty(db)


# --- idempotency ----------------------------------------------------------------------------------


def test_a_retry_replays_the_original_answer_byte_for_byte_without_a_second_gateway_call(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))
    trips.trip(101)
    client = charge_app.test_client()

    first = charge(client)
    time.sleep(0.01)  # time moves on: an answer made afresh would carry other timestamps than the first
    replay = charge(client)

    assert replay.status_code == first.status_code == 201
    assert replay.get_data() == first.get_data()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert gateway.calls == 1
    assert trips.calls[101] == 1
    assert row_counts(db)["payments"] == 1


def test_a_failed_charge_is_replayed_too(charge_app: Flask, trips: FakeTripService) -> None:
    use_gateway(charge_app, simulator(charge_app, 0.0))
    trips.trip(101)
    client = charge_app.test_client()

    first = charge(client)
    replay = charge(client)

    assert (first.status_code, replay.status_code) == (202, 202)
    assert replay.get_data() == first.get_data()


def test_normalisation_does_not_change_the_fingerprint(charge_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101)
    first = charge(charge_client, method="card", amount=10.5)

    replay = charge_client.post(
        "/v1/payments/charge",
        data='{ "amount": 10.50, "method": "CARD",  "idempotency_key": "key-1", "trip_id": 101 }',
        content_type="application/json",
    )

    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.get_data() == first.get_data()


def test_reused_key_with_other_body_returns_422(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    trips.trip(102)
    charge(charge_client, trip_id=101)

    response = charge(charge_client, trip_id=102)

    assert (response.status_code, response.get_json()["code"]) == (422, "idempotency_key_reused")
    assert row_counts(db)["payments"] == 1


def test_the_key_may_come_in_the_header_bare_or_quoted(charge_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101)

    first = charge(charge_client, key=None, headers={"Idempotency-Key": "hdr-key"})
    quoted = charge(charge_client, key=None, headers={"Idempotency-Key": '"hdr-key"'})
    in_body = charge(charge_client, key="hdr-key")
    both = charge(charge_client, key="hdr-key", headers={"Idempotency-Key": "hdr-key"})

    assert first.status_code == 201
    for replay in (quoted, in_body, both):
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.get_data() == first.get_data()


def test_only_the_hash_of_the_key_is_stored(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    charge(charge_client, key="very-secret-key")

    with db.cursor() as cur:
        cur.execute("SELECT key_hash, scope, row_to_json(k)::text FROM idempotency_keys k")
        key_hash, scope, whole_row = cur.fetchone()
    assert key_hash == hashlib.sha256(b"very-secret-key").hexdigest()
    assert scope == "charge"
    assert "very-secret-key" not in whole_row


def _claim_row(db: psycopg2.extensions.connection, key: str, body: dict, age_seconds: int, payment_id: Any = None):
    """Insert an unfinished claim as a request that is running (or died) would leave it."""
    from services.idempotency_service import fingerprint
    from services.payments.requests import ChargeRequest

    request = ChargeRequest(idempotency_key=key, **body)
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO idempotency_keys (scope, key_hash, request_fingerprint, request_path, lock_token,"
            " locked_at, payment_id, expires_at)"
            " VALUES ('charge', %s, %s, '/v1/payments/charge', gen_random_uuid(),"
            "         now() - make_interval(secs => %s), %s, now() + interval '1 day')",
            (hashlib.sha256(key.encode()).hexdigest(), fingerprint(request.fingerprint_fields()), age_seconds,
             payment_id),
        )  # fmt: skip


def test_a_key_still_in_flight_answers_409_with_retry_after(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    _claim_row(db, "key-1", {"trip_id": 101, "method": "CARD"}, age_seconds=0)

    response = charge(charge_client)

    assert (response.status_code, response.get_json()["code"]) == (409, "idempotency_key_in_use")
    assert response.headers["Retry-After"] == "1"
    assert row_counts(db)["payments"] == 0


class DatabaseLostAfterVerdict(StubGateway):
    """A gateway that approves, but the database becomes unreachable while it is being called."""

    def __init__(self, service: Any, away: ConnectionPool) -> None:
        self.service = service
        self.away = away
        self.calls = 0

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        self.calls += 1
        self.service.pool = self.away
        return GatewayResult("SUCCESS")


def test_a_verdict_the_database_missed_is_stored_when_it_returns_and_the_retry_replays_it(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    service = services(charge_app).charges
    pool = service.pool
    away = ConnectionPool(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", size=1, wait_timeout=1,
                          connect_timeout=1)  # fmt: skip
    gateway = use_gateway(charge_app, DatabaseLostAfterVerdict(service, away))
    client = charge_app.test_client()

    lost = charge(client)
    while_away = charge(client)
    service.pool = pool  # the database is back
    service.idempotency.deferred.run_once()
    retry = charge(client)

    assert (lost.status_code, lost.get_json()["code"]) == (503, "database_unavailable")
    assert (while_away.status_code, while_away.get_json()["code"]) == (409, "idempotency_key_in_use")
    assert (retry.status_code, retry.get_json()["status"]) == (201, "SUCCESS")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert gateway.calls == 1
    with db.cursor() as cur:
        cur.execute("SELECT status FROM payments")
        assert cur.fetchall() == [("SUCCESS",)]
    away.close()


def test_a_claim_abandoned_before_any_payment_is_taken_over_after_the_lock_timeout(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    _claim_row(db, "key-1", {"trip_id": 101, "method": "CARD"}, age_seconds=3600)

    response = charge(charge_client)

    assert (response.status_code, response.get_json()["status"]) == (201, "SUCCESS")


def test_a_claim_abandoned_after_the_attempt_was_recorded_finishes_without_calling_the_gateway(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection, insert_payment: Callable[..., int]
) -> None:
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))
    trips.trip(101)
    attempt = insert_payment(trip_id=101, status="PENDING")
    _claim_row(db, "key-1", {"trip_id": 101, "method": "CARD"}, age_seconds=3600, payment_id=attempt)

    response = charge(charge_app.test_client())
    replay = charge(charge_app.test_client())

    assert response.status_code == 202
    assert (response.get_json()["payment_id"], response.get_json()["status"]) == (attempt, "PENDING")
    assert gateway.calls == 0
    assert replay.get_data() == response.get_data()


def test_an_expired_key_counts_as_new(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    trips.trip(102)
    first = charge(charge_client, trip_id=101)
    with db.cursor() as cur:
        cur.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

    second = charge(charge_client, trip_id=102)

    assert second.status_code == 201
    assert second.get_json()["payment_id"] != first.get_json()["payment_id"]


def test_purging_removes_only_expired_keys(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    trips.trip(102)
    charge(charge_app.test_client(), key="old", trip_id=101)
    charge(charge_app.test_client(), key="new", trip_id=102)
    with db.cursor() as cur:
        cur.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key_hash = %s",
                    (hashlib.sha256(b"old").hexdigest(),))  # fmt: skip

    purged = services(charge_app).housekeeper.purge_expired_keys()

    assert purged == 1
    assert row_counts(db)["idempotency_keys"] == 1


# --- bad requests ---------------------------------------------------------------------------------

VALID = {"idempotency_key": "k-1", "trip_id": 101, "method": "CARD"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"trip_id": 101, "method": "CARD"}, "idempotency_key"),
        ({"idempotency_key": "k", "method": "CARD"}, "trip_id"),
        ({"idempotency_key": "k", "trip_id": 101}, "method"),
        ({**VALID, "trip_id": 0}, "trip_id"),
        ({**VALID, "trip_id": -5}, "trip_id"),
        ({**VALID, "trip_id": "101"}, "trip_id"),
        ({**VALID, "trip_id": 101.0}, "trip_id"),
        ({**VALID, "trip_id": True}, "trip_id"),
        ({**VALID, "trip_id": 2**63}, "trip_id"),
        ({**VALID, "trip_id": None}, "trip_id"),
        ({**VALID, "method": "BITCOIN"}, "method"),
        ({**VALID, "method": 3}, "method"),
        ({**VALID, "method": ""}, "method"),
        ({**VALID, "rider_id": 0}, "rider_id"),
        ({**VALID, "rider_id": "7"}, "rider_id"),
        ({**VALID, "driver_id": -1}, "driver_id"),
        ({**VALID, "driver_id": False}, "driver_id"),
        ({**VALID, "amount": 0}, "amount"),
        ({**VALID, "amount": -10}, "amount"),
        ({**VALID, "amount": 10.005}, "amount"),
        ({**VALID, "amount": "10.00"}, "amount"),
        ({**VALID, "amount": True}, "amount"),
        ({**VALID, "amount": 1e12}, "amount"),
        ({**VALID, "amount": 100000000}, "amount"),
        ({**VALID, "ammount": 10}, "ammount"),
        ({**VALID, "idempotency_key": ""}, "idempotency_key"),
        ({**VALID, "idempotency_key": "x" * 256}, "idempotency_key"),
        ({**VALID, "idempotency_key": "has space"}, "idempotency_key"),
        ({**VALID, "idempotency_key": "caf\u00e9"}, "idempotency_key"),
        ({**VALID, "idempotency_key": 12345}, "idempotency_key"),
    ],
)
def test_bad_charge_body_returns_400_naming_the_field_and_writes_nothing(
    charge_client: FlaskClient,
    trips: FakeTripService,
    db: psycopg2.extensions.connection,
    body: dict,
    field: str,
) -> None:
    trips.trip(101)

    response = charge_client.post("/v1/payments/charge", json=body)

    assert response.status_code == 400
    payload = response.get_json()
    assert (payload["code"], payload["status_code"], payload["field"]) == ("validation_error", 400, field)
    assert field in payload["error"]
    assert all_empty(db)
    assert trips.calls == {}


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("not json", "application/json", 400),
        ("[1, 2, 3]", "application/json", 400),
        ('"text"', "application/json", 400),
        ("", "application/json", 400),
        ("null", "application/json", 400),
        ('{"idempotency_key": "k", "trip_id": 101, "method": "CARD", "amount": NaN}', "application/json", 400),
        ('{"idempotency_key": "k", "trip_id": 101, "method": "CARD", "amount": Infinity}', "application/json", 400),
        ('{"idempotency_key": "k", "trip_id": 101, "trip_id": 102, "method": "CARD"}', "application/json", 400),
        ('{"idempotency_key": "k", "trip_id": 101, "method": "CARD"}', "text/plain", 415),
        ('{"idempotency_key": "k", "trip_id": 101, "method": "CARD"}', "application/x-www-form-urlencoded", 415),
        ("[" * 100_000 + "]" * 100_000, "application/json", 413),
        ("[" * 20_000 + "]" * 20_000, "application/json", 400),
    ],
)
def test_unreadable_bodies_get_a_4xx_json_error_and_write_nothing(
    charge_client: FlaskClient, db: psycopg2.extensions.connection, data: str, content_type: str, status: int
) -> None:
    response = charge_client.post("/v1/payments/charge", data=data, content_type=content_type)

    assert response.status_code == status
    assert response.is_json
    assert response.get_json()["status_code"] == status
    assert all_empty(db)


def test_header_and_body_keys_that_differ_are_400(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)

    response = charge(charge_client, key="body-key", headers={"Idempotency-Key": "header-key"})

    assert (response.status_code, response.get_json()["field"]) == (400, "idempotency_key")
    assert all_empty(db)


def test_a_null_body_key_is_rejected_even_with_a_header_key(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)

    response = charge(charge_client, key=None, headers={"Idempotency-Key": "hdr"}, idempotency_key=None)

    assert (response.status_code, response.get_json()["field"]) == (400, "idempotency_key")
    assert all_empty(db)


@pytest.mark.parametrize("header", ["", '""', "has space", "x" * 256, "dupA,dupB", '"a"b"', 'a"b', '"a\\b"'])
def test_a_malformed_key_header_is_400(
    charge_client: FlaskClient, db: psycopg2.extensions.connection, header: str
) -> None:
    response = charge(charge_client, key=None, headers={"Idempotency-Key": header})

    assert (response.status_code, response.get_json()["field"]) == (400, "idempotency_key")
    assert all_empty(db)


def test_a_key_header_sent_twice_is_400_not_one_joined_key(
    serve_gunicorn: Callable[..., str], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    # The WSGI server joins repeated headers with a comma before the application sees them.
    trips.trip(101)
    url = serve_gunicorn(TRIP_SERVICE_URL=trips.url)
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
        body = b'{"trip_id": 101, "method": "CASH"}'
        sock.sendall(
            b"POST /v1/payments/charge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: dupA\r\nIdempotency-Key: dupB\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        answer = b"".join(iter(lambda: sock.recv(65536), b""))

    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert all_empty(db)


def test_get_on_the_charge_route_is_405_advertising_post(charge_client: FlaskClient) -> None:
    response = charge_client.get("/v1/payments/charge")

    assert (response.status_code, response.get_json()["code"]) == (405, "method_not_allowed")
    assert "POST" in response.headers["Allow"] and "GET" not in response.headers["Allow"]
    assert json.loads(response.get_data())["status_code"] == 405


def test_an_exhausted_id_sequence_is_a_503_naming_it_and_the_key_can_be_retried_after_repair(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, distance_km=10.5)
    with db.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('payments', 'payment_id'), 9223372036854775807)")

    refused = charge(charge_client, key="seq-key")

    assert refused.status_code == 503
    assert refused.get_json()["code"] == "ids_exhausted"
    assert "run out of ids" in refused.get_json()["error"]
    assert row_counts(db)["payments"] == 0
    with db.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('payments', 'payment_id'), 1, false)")
    assert charge(charge_client, key="seq-key").status_code == 201


def test_a_trip_service_outage_is_logged_once_and_its_end_once_with_the_failed_calls(
    make_app: Callable[..., Flask], trips: FakeTripService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.clients.trips")
    client = make_app(TRIP_SERVICE_URL=trips.url, TRIP_SERVICE_BREAKER_THRESHOLD=1000).test_client()
    for trip_id in range(201, 205):
        trips.answer(trip_id, 503, {"error": "down"})
        assert charge(client, key=f"k{trip_id}", trip_id=trip_id, method="CASH").status_code == 503
    trips.trip(205)

    assert charge(client, key="k205", trip_id=205, method="CASH").status_code == 201

    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "services.clients.trips"]
    assert said == [
        (logging.WARNING, "trip service unavailable; further failures are counted until it answers again"),
        (logging.INFO, "trip service available again"),
    ]
    assert [r.failed_calls for r in caplog.records if r.levelno == logging.INFO] == [4]
