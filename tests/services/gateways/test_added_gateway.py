"""A gateway added without touching the project: the tests' own (tests/gateways_extra/memory) takes real payments.

It is registered from the tests (`register_gateway`), named by GATEWAY, and the service charges,
holds, captures and refunds through it, stores its name on each payment and shows it in the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from tests.fakes import FakeNotificationService, FakeProfileService, FakeTripService
from tests.gateways_extra import memory


@pytest.fixture
def memory_app(
    memory_gateway: str,
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    profiles: FakeProfileService,
) -> Flask:
    """An app whose new payments go to the tests' own gateway."""
    return make_app(
        GATEWAY=memory_gateway,
        TRIP_SERVICE_URL=trips.url,
        NOTIFICATION_SERVICE_URL=notifications.url,
        RIDER_SERVICE_URL=profiles.url,
        DRIVER_SERVICE_URL=profiles.url,
        NOTIFY_DISPATCHER_ENABLED=False,
        RECONCILE_INTERVAL=0,
        RATE_LIMIT_ENABLED=False,
    )


def the_gateway(app: Flask) -> memory.MemoryGateway:
    gateway = services(app).gateways.get(memory.NAME)
    assert isinstance(gateway, memory.MemoryGateway)
    return gateway


def stored(db: psycopg2.extensions.connection, payment_id: int) -> tuple[Any, ...]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, amount, gateway, gateway_reference FROM payments WHERE payment_id = %s", (payment_id,)
        )
        return cur.fetchone()


def test_a_card_charge_and_its_refund_go_through_the_added_gateway(
    memory_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = memory_app.test_client()
    trips.trip(101)

    charged = client.post("/v1/payments/charge", json={"idempotency_key": "k1", "trip_id": 101, "method": "CARD"})

    assert charged.status_code == 201, charged.get_json()
    body = charged.get_json()
    assert (body["status"], body["gateway"]) == ("SUCCESS", "memory")
    payment_id = body["payment_id"]
    reference = the_gateway(memory_app).ledger[f"payment-{payment_id}"].reference
    assert stored(db, payment_id)[2:] == ("memory", reference)
    assert client.get(f"/v1/payments/{payment_id}").get_json()["gateway"] == "memory"

    refunded = client.post(
        f"/v1/payments/{payment_id}/refund", json={"amount": 10.0}, headers={"Idempotency-Key": "r1"}
    )

    assert refunded.status_code == 200, refunded.get_json()
    assert refunded.get_json()["status"] == "PARTIALLY_REFUNDED"
    assert the_gateway(memory_app).movements() == (1, 1)


def test_a_card_the_added_gateway_declines_fails_the_payment_with_its_error_code(
    memory_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    body = {"idempotency_key": "k1", "trip_id": 101, "method": "CARD", "payment_method": memory.DECLINED}

    declined = memory_app.test_client().post("/v1/payments/charge", json=body)

    assert declined.status_code == 202
    assert (declined.get_json()["status"], declined.get_json()["error_code"]) == ("FAILED", "CARD_DECLINED")
    assert stored(db, declined.get_json()["payment_id"])[:3][::2] == ("FAILED", "memory")
    assert the_gateway(memory_app).movements() == (0, 0)


def test_a_hold_on_the_added_gateway_is_captured_for_the_fare(
    memory_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = memory_app.test_client()
    trips.trip(101, status="ACCEPTED", distance_km=10.5, surge_multiplier=1.0)
    held = client.post("/v1/payments/authorize", json={"idempotency_key": "h1", "trip_id": 101, "method": "CARD"})
    assert (held.status_code, held.get_json()["status"]) == (201, "AUTHORIZED"), held.get_json()
    payment_id = held.get_json()["payment_id"]

    trips.trip(101, status="COMPLETED", distance_km=8, surge_multiplier=1.0)
    captured = client.post(f"/v1/payments/{payment_id}/capture")

    assert (captured.status_code, captured.get_json()["status"], captured.get_json()["amount"]) == (
        200,
        "SUCCESS",
        25.0,
    )
    entry = the_gateway(memory_app).ledger[f"payment-{payment_id}"]
    assert (entry.status, str(entry.amount), str(entry.captured)) == ("SUCCESS", "39.06", "25.00")
    assert stored(db, payment_id)[2] == "memory"
