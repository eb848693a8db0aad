"""Holds over HTTP on the simulator: authorize at acceptance, capture or void at the end, refund, receipt."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.services import services
from config import Config
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from services.gateways import (
    AUTHORIZED,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayResult,
    GatewayUnavailableError,
)
from tests.fakes import FakeNotificationService, FakeProfileService, FakeTripService
from tests.gateways import CountingGateway, simulator, use_gateway
from tests.helpers import all_at_once, row_counts


@pytest.fixture
def hold_app_with(
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    profiles: FakeProfileService,
) -> Callable[..., Flask]:
    """Apps wired to the fakes with an approving simulator, reconciliation run only when a test asks; plus overrides."""

    def build(**overrides: Any) -> Flask:
        return make_app(
            **{
                "TRIP_SERVICE_URL": trips.url,
                "NOTIFICATION_SERVICE_URL": notifications.url,
                "RIDER_SERVICE_URL": profiles.url,
                "DRIVER_SERVICE_URL": profiles.url,
                "GATEWAY_SUCCESS_RATE": 1.0,
                "HTTP_READ_TIMEOUT": 1.0,
                "RECONCILE_INTERVAL": 0,
                "RECONCILE_MIN_AGE": 0,
                "NOTIFY_DISPATCHER_ENABLED": False,
                "RATE_LIMIT_ENABLED": False,
                **overrides,
            }
        )

    return build


@pytest.fixture
def hold_app(hold_app_with: Callable[..., Flask]) -> Flask:
    """An app of `hold_app_with` without overrides."""
    return hold_app_with()


@pytest.fixture
def hold_client(hold_app: Flask) -> FlaskClient:
    """Test client of `hold_app`."""
    return hold_app.test_client()


def authorize(client: FlaskClient, trip_id: int = 101, key: str | None = None, **body: Any) -> Any:
    """POST /v1/payments/authorize for a CARD trip."""
    payload = {"idempotency_key": key or f"hold-{trip_id}", "trip_id": trip_id, "method": "CARD", **body}
    return client.post("/v1/payments/authorize", json=payload)


def held(client: FlaskClient, trips: FakeTripService, trip_id: int = 101, distance_km: Any = 10.5) -> int:
    """A hold placed on an accepted trip; its payment id."""
    trips.trip(trip_id, status="ACCEPTED", distance_km=distance_km)
    response = authorize(client, trip_id)
    assert (response.status_code, response.get_json()["status"]) == (201, "AUTHORIZED"), response.get_json()
    return response.get_json()["payment_id"]


def stored(db: psycopg2.extensions.connection, payment_id: int) -> tuple[str, Decimal, Decimal | None]:
    with db.cursor() as cur:
        cur.execute("SELECT status, amount, authorized_amount FROM payments WHERE payment_id = %s", (payment_id,))
        return cur.fetchone()


def ledger(db: psycopg2.extensions.connection, payment_id: int) -> tuple[str, Decimal, Decimal, Decimal]:
    """The simulator's row of the payment: status, amount held, captured, refunded."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, amount, amount_captured, amount_refunded FROM simulator_transactions"
            " WHERE idempotency_key = %s",
            (f"payment-{payment_id}",),
        )
        return cur.fetchone()


def outbox_ids(db: psycopg2.extensions.connection) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT notification_id FROM notification_outbox ORDER BY created_at, notification_id")
        return [row[0] for row in cur.fetchall()]


# --- the life of a trip --------------------------------------------------------------------------


def test_the_life_of_a_trip_holds_at_acceptance_captures_the_fare_refunds_and_issues_a_receipt(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="ACCEPTED", distance_km=10.5, surge_multiplier=1.0)
    hold = authorize(hold_client, 101)
    assert hold.status_code == 201
    body = hold.get_json()
    payment_id = body["payment_id"]
    # (5.00 + 10.5 x 2.50) x 1.0 x 1.25 = 39.0625 -> 39.06, rounded once.
    assert (body["status"], body["amount"], body["authorized_amount"]) == ("AUTHORIZED", 39.06, 39.06)
    assert body["fare"]["hold_multiplier"] == 1.25
    assert ledger(db, payment_id) == ("REQUIRES_CAPTURE", Decimal("39.06"), Decimal("0.00"), Decimal("0.00"))

    trips.trip(101, status="COMPLETED", distance_km=8, surge_multiplier=1.0)
    captured = hold_client.post(f"/v1/payments/{payment_id}/capture")
    assert captured.status_code == 200, captured.get_json()
    body = captured.get_json()
    assert (body["status"], body["amount"], body["authorized_amount"]) == ("SUCCESS", 25.0, 39.06)
    assert (body["fare"]["type"], body["fare"]["distance_km"], body["fare"]["amount"]) == ("TRIP", 8, 25.0)
    assert ledger(db, payment_id) == ("SUCCEEDED", Decimal("39.06"), Decimal("25.00"), Decimal("0.00"))

    refunded = hold_client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 10.0})
    assert refunded.status_code == 200
    assert (refunded.get_json()["status"], refunded.get_json()["remaining_amount"]) == ("PARTIALLY_REFUNDED", 15.0)
    assert ledger(db, payment_id)[3] == Decimal("10.00")

    receipt = hold_client.get(f"/v1/payments/{payment_id}/receipt")
    assert receipt.status_code == 200
    data = receipt.get_json()["receipt_data"]
    assert (data["payment"]["authorized_amount"], data["payment"]["amount"]) == (39.06, 25.0)
    assert data["totals"] == {"amount": 25.0, "refunded": 10.0, "net": 15.0}
    html = hold_client.get(f"/v1/payments/{payment_id}/receipt", headers={"Accept": "text/html"}).get_data(True)
    assert "39.06" in html and "25.00" in html

    assert outbox_ids(db)[:2] == [f"payment-{payment_id}-authorized", f"payment-{payment_id}-success"]


def test_a_cancelled_trip_captures_the_cancellation_fee(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="CANCELLED", distance_km=0)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert response.status_code == 200
    assert (response.get_json()["amount"], response.get_json()["fare"]["type"]) == (3.0, "CANCELLATION")
    assert stored(db, payment_id) == ("SUCCESS", Decimal("3.00"), Decimal("39.06"))


def test_a_cancelled_trip_without_a_cancellation_fee_voids_the_hold_and_frees_the_trip(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = hold_app_with(CANCELLATION_FEE=Decimal("0")).test_client()
    payment_id = held(client, trips)
    trips.trip(101, status="CANCELLED")

    response = client.post(f"/v1/payments/{payment_id}/capture")

    assert (response.status_code, response.get_json()["status"]) == (200, "VOIDED")
    assert stored(db, payment_id) == ("VOIDED", Decimal("39.06"), Decimal("39.06"))
    assert ledger(db, payment_id)[0] == "CANCELED"
    trips.trip(101, status="ACCEPTED", distance_km=10.5)
    assert authorize(client, 101, key="second-hold").status_code == 201


def test_a_fare_above_the_hold_is_409_with_both_amounts_and_changes_nothing_then_an_explicit_amount_captures(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=20)  # 5 + 50 = 55.00 > 39.06
    before = row_counts(db)

    refused = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert refused.status_code == 409
    error = refused.get_json()
    assert (error["code"], error["authorized_amount"], error["fare"]) == ("capture_exceeds_authorization", 39.06, 55.0)
    assert "39.06" in error["error"] and "55.00" in error["error"]
    assert stored(db, payment_id) == ("AUTHORIZED", Decimal("39.06"), Decimal("39.06"))
    assert row_counts(db) == before
    assert ledger(db, payment_id)[0] == "REQUIRES_CAPTURE"

    captured = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 39.06})
    assert (captured.status_code, captured.get_json()["amount"]) == (200, 39.06)
    assert captured.get_json()["fare"]["type"] == "CLIENT_AMOUNT"


def test_an_explicit_amount_above_the_hold_is_409_too(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 39.07})

    assert (response.status_code, response.get_json()["code"]) == (409, "capture_exceeds_authorization")
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_a_hold_uses_the_clients_amount_when_given(hold_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101, status="REQUESTED", distance_km=None)

    response = authorize(hold_client, 101, amount=50)

    assert (response.status_code, response.get_json()["authorized_amount"]) == (201, 50.0)
    assert response.get_json()["fare"]["type"] == "CLIENT_AMOUNT"


@pytest.mark.parametrize("status", ["REQUESTED", "ACCEPTED", "ONGOING"])
def test_a_hold_can_be_placed_on_a_trip_that_has_not_ended(
    hold_client: FlaskClient, trips: FakeTripService, status: str
) -> None:
    trips.trip(101, status=status, distance_km=3, surge_level="HIGH")

    response = authorize(hold_client, 101)

    # (5 + 3 x 2.5) x 1.5 x 1.25 = 23.4375 -> 23.44
    assert (response.status_code, response.get_json()["authorized_amount"]) == (201, 23.44)


@pytest.mark.parametrize("status", ["COMPLETED", "CANCELLED", "PAID"])
def test_a_hold_on_an_ended_trip_is_400_trip_not_holdable_and_writes_nothing(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection, status: str
) -> None:
    trips.trip(101, status=status)

    response = authorize(hold_client, 101)

    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["trip_status"]) == ("trip_not_holdable", status)
    assert row_counts(db)["payments"] == 0 and row_counts(db)["idempotency_keys"] == 0


def test_a_cash_hold_is_400_hold_not_supported_and_writes_nothing(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="ACCEPTED")

    response = authorize(hold_client, 101, method="cash")

    assert (response.status_code, response.get_json()["code"], response.get_json()["field"]) == (
        400,
        "hold_not_supported",
        "method",
    )
    assert row_counts(db)["payments"] == 0 and row_counts(db)["idempotency_keys"] == 0


def test_an_accepted_trip_without_a_distance_needs_an_amount(hold_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101, status="ACCEPTED", distance_km=None)

    response = authorize(hold_client, 101)

    assert (response.status_code, response.get_json()["code"]) == (502, "trip_service_bad_response")
    assert "distance" in response.get_json()["error"]


def test_a_held_trip_cannot_be_charged_or_held_again(hold_client: FlaskClient, trips: FakeTripService) -> None:
    payment_id = held(hold_client, trips)

    again = authorize(hold_client, 101, key="another-key")
    trips.trip(101, status="COMPLETED")
    charged = hold_client.post("/v1/payments/charge", json={"idempotency_key": "c", "trip_id": 101, "method": "CARD"})

    for response in (again, charged):
        assert response.status_code == 409
        assert (response.get_json()["code"], response.get_json()["payment_id"]) == ("trip_already_paid", payment_id)


def test_an_authorization_is_idempotent_like_a_charge(hold_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101, status="ACCEPTED")
    first = authorize(hold_client, 101, key="k")

    replay = authorize(hold_client, 101, key="k")
    other = authorize(hold_client, 101, key="k", amount=10)

    assert replay.get_data() == first.get_data() and replay.headers["Idempotent-Replayed"] == "true"
    assert (other.status_code, other.get_json()["code"]) == (422, "idempotency_key_reused")


def test_a_declined_hold_is_202_failed_and_frees_the_trip(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService
) -> None:
    use_gateway(hold_app, simulator(hold_app, 0.0))
    trips.trip(101, status="ACCEPTED")

    response = authorize(hold_client, 101)

    assert (response.status_code, response.get_json()["status"]) == (202, "FAILED")
    assert response.get_json()["error_code"]
    use_gateway(hold_app, simulator(hold_app, 1.0))
    assert authorize(hold_client, 101, key="retry").status_code == 201


# --- capture and void: states ---------------------------------------------------------------------


def test_a_void_releases_the_hold_and_frees_the_trip(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)

    response = hold_client.post(f"/v1/payments/{payment_id}/void")

    assert (response.status_code, response.get_json()["status"]) == (200, "VOIDED")
    assert ledger(db, payment_id)[0] == "CANCELED"
    again = hold_client.post(f"/v1/payments/{payment_id}/void")
    assert (again.status_code, again.get_json()["code"], again.get_json()["payment_status"]) == (
        400,
        "payment_not_voidable",
        "VOIDED",
    )
    assert authorize(hold_client, 101, key="after-void").status_code == 201
    assert f"payment-{payment_id}-voided" in outbox_ids(db)


def test_receipts_of_holds_and_released_holds_are_409(hold_client: FlaskClient, trips: FakeTripService) -> None:
    payment_id = held(hold_client, trips)
    assert hold_client.get(f"/v1/payments/{payment_id}/receipt").status_code == 409
    hold_client.post(f"/v1/payments/{payment_id}/void")
    response = hold_client.get(f"/v1/payments/{payment_id}/receipt")
    assert (response.status_code, response.get_json()["code"]) == (409, "receipt_unavailable")


def test_a_hold_cannot_be_refunded_before_it_is_captured(hold_client: FlaskClient, trips: FakeTripService) -> None:
    payment_id = held(hold_client, trips)

    response = hold_client.post(f"/v1/payments/{payment_id}/refund")

    assert (response.status_code, response.get_json()["code"]) == (400, "payment_not_refundable")


def test_a_captured_hold_cannot_be_captured_or_voided_again(hold_client: FlaskClient, trips: FakeTripService) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    assert hold_client.post(f"/v1/payments/{payment_id}/capture").status_code == 200

    capture = hold_client.post(f"/v1/payments/{payment_id}/capture")
    void = hold_client.post(f"/v1/payments/{payment_id}/void")

    assert (capture.status_code, capture.get_json()["code"], capture.get_json()["payment_status"]) == (
        400,
        "payment_not_capturable",
        "SUCCESS",
    )
    assert (void.status_code, void.get_json()["code"]) == (400, "payment_not_voidable")


def test_a_charge_is_not_a_hold(hold_client: FlaskClient, trips: FakeTripService) -> None:
    trips.trip(101)
    charged = hold_client.post("/v1/payments/charge", json={"idempotency_key": "c", "trip_id": 101, "method": "CARD"})
    payment_id = charged.get_json()["payment_id"]
    assert charged.get_json()["authorized_amount"] is None

    assert hold_client.post(f"/v1/payments/{payment_id}/capture").get_json()["code"] == "payment_not_capturable"
    assert hold_client.post(f"/v1/payments/{payment_id}/void").get_json()["code"] == "payment_not_voidable"


@pytest.mark.parametrize("path", ["capture", "void"])
@pytest.mark.parametrize("payment_id", ["999", "abc", "0"])
def test_capturing_or_voiding_an_unknown_payment_is_404(hold_client: FlaskClient, path: str, payment_id: str) -> None:
    response = hold_client.post(f"/v1/payments/{payment_id}/{path}")

    assert (response.status_code, response.get_json()["code"]) == (404, "payment_not_found")


@pytest.mark.parametrize("status", ["ACCEPTED", "ONGOING"])
def test_capturing_before_the_trip_ends_is_400_trip_not_completed_and_the_hold_stands(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection, status: str
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status=status)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 10})

    assert (response.status_code, response.get_json()["code"]) == (400, "trip_not_completed")
    assert stored(db, payment_id)[0] == "AUTHORIZED"


@pytest.mark.parametrize(
    "body",
    [{"amount": 0}, {"amount": -1}, {"amount": 10.001}, {"amount": None}, {"amount": "10"}, {"ammount": 10},
     {"amount": 100000000}],
)  # fmt: skip
def test_a_bad_capture_body_is_400_naming_the_field_and_changes_nothing(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection, body: dict[str, Any]
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture", json=body)

    assert response.status_code == 400
    assert response.get_json()["field"] in ("amount", "ammount")
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_a_void_body_takes_only_an_idempotency_key(hold_client: FlaskClient, trips: FakeTripService) -> None:
    payment_id = held(hold_client, trips)

    response = hold_client.post(f"/v1/payments/{payment_id}/void", json={"amount": 1})

    assert (response.status_code, response.get_json()["field"]) == (400, "amount")


def test_a_capture_with_a_key_replays_and_a_changed_amount_is_422(
    hold_client: FlaskClient, trips: FakeTripService
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    first = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})

    replay = hold_client.post(f"/v1/payments/{payment_id}/capture", headers={"Idempotency-Key": "cap"})
    other = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap", "amount": 1})

    assert first.status_code == 200
    assert replay.get_data() == first.get_data() and replay.headers["Idempotent-Replayed"] == "true"
    assert (other.status_code, other.get_json()["code"]) == (422, "idempotency_key_reused")


def test_a_refused_capture_is_not_stored_under_its_key(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=20)

    refused = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})
    trips.trip(101, status="COMPLETED", distance_km=8)
    retried = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})

    assert (refused.status_code, retried.status_code) == (409, 200)


# --- the gateway's answers --------------------------------------------------------------------------


class CaptureWithoutAnswer(CountingGateway):
    """The simulator, except that a capture never reaches it (timeout before it arrived)."""

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        self.captures += 1
        raise GatewayUnavailableError("timed out")


class CaptureAnswerLost(CountingGateway):
    """The simulator captures, but its answer never arrives back."""

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        super().capture(charge, amount)
        raise GatewayUnavailableError("answer lost")


def test_a_capture_without_an_answer_is_202_pending_and_reconciliation_captures_it_once(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    use_gateway(hold_app, CaptureWithoutAnswer(simulator(hold_app, 1.0)))

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert (response.status_code, response.get_json()["status"]) == (202, "PENDING")
    body = response.get_json()
    # amount is still the hold until the capture settles; capture_amount says what is being taken.
    assert (body["amount"], body["capture_amount"], body["fare"]["amount"]) == (39.06, 25.0, 25.0)
    assert hold_client.get(f"/v1/payments/{payment_id}").get_json()["capture_amount"] == 25.0
    assert ledger(db, payment_id)[0] == "REQUIRES_CAPTURE"
    assert hold_client.post(f"/v1/payments/{payment_id}/void").get_json()["code"] == "payment_not_voidable"
    gateway = use_gateway(hold_app, CountingGateway(simulator(hold_app, 1.0)))

    report = services(hold_app).reconciler.run_once()

    assert report.counts() == {"captured": 1}
    assert gateway.captures == 1
    assert stored(db, payment_id) == ("SUCCESS", Decimal("25.00"), Decimal("39.06"))
    assert "capture_amount" not in hold_client.get(f"/v1/payments/{payment_id}").get_json()
    assert ledger(db, payment_id)[2] == Decimal("25.00")
    assert outbox_ids(db)[-2:] == [f"payment-{payment_id}-capture-pending", f"payment-{payment_id}-success"]


def test_a_capture_whose_answer_was_lost_is_settled_by_retrieve_never_captured_twice(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    use_gateway(hold_app, CaptureAnswerLost(simulator(hold_app, 1.0)))

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert response.status_code == 202
    assert ledger(db, payment_id)[0] == "SUCCEEDED"
    gateway = use_gateway(hold_app, CountingGateway(simulator(hold_app, 1.0)))

    report = services(hold_app).reconciler.run_once()

    assert report.counts() == {"captured": 1}
    assert gateway.captures == 0
    assert stored(db, payment_id) == ("SUCCESS", Decimal("25.00"), Decimal("39.06"))


class RefusingCapture(CountingGateway):
    """The simulator, except that it refuses every capture and the hold stands."""

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        self.captures += 1
        return GatewayResult(AUTHORIZED, reference=charge.reference)


def test_a_capture_the_gateway_refuses_is_502_the_hold_stands_and_the_key_can_try_again(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    use_gateway(hold_app, RefusingCapture(simulator(hold_app, 1.0)))

    refused = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})

    assert refused.status_code == 502
    error = refused.get_json()
    assert (error["code"], error["payment_status"]) == ("gateway_capture_failed", "AUTHORIZED")
    assert "the hold stands" in error["error"]
    assert stored(db, payment_id) == ("AUTHORIZED", Decimal("39.06"), Decimal("39.06"))
    assert f"payment-{payment_id}-capture-refused" in outbox_ids(db)
    use_gateway(hold_app, simulator(hold_app, 1.0))
    retried = hold_client.post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})
    assert (retried.status_code, retried.get_json()["status"]) == (200, "SUCCESS")


class ReleasedElsewhere(CountingGateway):
    """The hold is gone at the gateway (released there) by the time the capture arrives."""

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        self.captures += 1
        return GatewayResult(VOIDED, reference=charge.reference)


class CapturedElsewhere(CountingGateway):
    """The hold was captured at the gateway (not through this service) when the void arrives."""

    def void(self, charge: GatewayCharge) -> GatewayResult:
        self.voids += 1
        return GatewayResult(SUCCESS, reference=charge.reference, captured=Decimal("10.00"))


def test_a_capture_of_a_hold_the_gateway_already_released_is_502_and_records_the_release(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    use_gateway(hold_app, ReleasedElsewhere(simulator(hold_app, 1.0)))

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert response.status_code == 502
    error = response.get_json()
    assert (error["code"], error["payment_status"]) == ("gateway_capture_failed", "VOIDED")
    assert "now VOIDED" in error["error"]
    assert stored(db, payment_id)[0] == "VOIDED"


def test_a_void_of_a_hold_the_gateway_captured_is_502_and_records_the_capture(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    use_gateway(hold_app, CapturedElsewhere(simulator(hold_app, 1.0)))

    response = hold_client.post(f"/v1/payments/{payment_id}/void")

    assert response.status_code == 502
    assert (response.get_json()["code"], response.get_json()["payment_status"]) == ("gateway_void_failed", "SUCCESS")
    assert "already captured the hold" in response.get_json()["error"]
    # What the gateway took, not the hold: no refund can give back more than that.
    assert stored(db, payment_id) == ("SUCCESS", Decimal("10.00"), Decimal("39.06"))
    use_gateway(hold_app, simulator(hold_app, 1.0))
    too_much = hold_client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 20})
    assert (too_much.status_code, too_much.get_json()["code"]) == (400, "refund_exceeds_remaining")


def test_a_final_fare_above_the_largest_amount_is_409_capture_exceeds_authorization(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    # Dear kilometres (the start-up check lets them through: 1,000 km at the top surge still fits).
    client = hold_app_with(RATE_PER_KM=Decimal("60000.00"), HOLD_MULTIPLIER=Decimal("1")).test_client()
    payment_id = held(client, trips, distance_km=1)
    trips.trip(101, status="COMPLETED", distance_km=9000, surge_multiplier=9)

    response = client.post(f"/v1/payments/{payment_id}/capture")

    assert response.status_code == 409
    error = response.get_json()
    assert (error["code"], error["authorized_amount"]) == ("capture_exceeds_authorization", 60005.0)
    assert error["fare"] > 99999999.99
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_a_capture_before_the_trip_ends_says_it_cannot_be_captured_yet(
    hold_client: FlaskClient, trips: FakeTripService
) -> None:
    payment_id = held(hold_client, trips)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert response.get_json()["error"] == ("Trip 101 is ACCEPTED; only COMPLETED or CANCELLED trips can be captured.")


def test_a_hold_that_overflows_says_it_is_the_hold(hold_app_with: Callable[..., Flask], trips: FakeTripService) -> None:
    client = hold_app_with(RATE_PER_KM=Decimal("60000.00"), HOLD_MULTIPLIER=Decimal("1")).test_client()
    trips.trip(101, status="ACCEPTED", distance_km=9000, surge_multiplier=9)

    response = authorize(client, 101)

    assert (response.status_code, response.get_json()["code"]) == (400, "fare_out_of_range")
    assert "needs a hold of 4860000045.00 (its fare x HOLD_MULTIPLIER)" in response.get_json()["error"]


def test_a_pending_authorization_settles_to_authorized(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    use_gateway(hold_app, simulator(hold_app, 1.0, pending_rate=1.0))
    trips.trip(101, status="ACCEPTED")
    response = authorize(hold_client, 101)
    assert (response.status_code, response.get_json()["status"]) == (202, "PENDING")
    assert response.get_json()["authorized_amount"] == 39.06

    report = services(hold_app).reconciler.run_once()

    assert report.counts() == {"authorized": 1}
    assert stored(db, response.get_json()["payment_id"])[0] == "AUTHORIZED"


# --- concurrency and expiry -------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(10))
def test_twenty_concurrent_captures_and_voids_of_one_hold_have_exactly_one_winner_and_one_gateway_call(
    hold_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection, round_: int
) -> None:
    client = hold_app.test_client()
    payment_id = held(client, trips, trip_id=500 + round_)
    trips.trip(500 + round_, status="COMPLETED", distance_km=8)
    gateway = use_gateway(hold_app, CountingGateway(simulator(hold_app, 1.0)))

    def call(n: int) -> Any:
        return hold_app.test_client().post(f"/v1/payments/{payment_id}/{'capture' if n % 2 else 'void'}")

    responses = all_at_once([lambda n=n: call(n) for n in range(20)])

    outcomes = Counter(r.status_code for r in responses)
    assert outcomes[200] == 1 and outcomes[400] == 19, outcomes
    winner = next(r for r in responses if r.status_code == 200).get_json()
    assert {r.get_json()["code"] for r in responses if r.status_code == 400} <= {
        "payment_not_capturable",
        "payment_not_voidable",
    }
    assert stored(db, payment_id)[0] == winner["status"]
    assert gateway.captures + gateway.voids == 1
    assert ledger(db, payment_id)[0] == ("SUCCEEDED" if winner["status"] == "SUCCESS" else "CANCELED")


def test_concurrent_captures_and_refunds_of_a_hold_never_refund_what_was_not_captured(
    hold_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = hold_app.test_client()
    payment_id = held(client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)

    def call(n: int) -> Any:
        path = "capture" if n % 2 else "refund"
        return hold_app.test_client().post(f"/v1/payments/{payment_id}/{path}")

    responses = all_at_once([lambda n=n: call(n) for n in range(10)])

    assert Counter(r.status_code for r in responses)[200] in (1, 2)
    _, amount, _ = stored(db, payment_id)
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(sum(refund_amount), 0) FROM payment_refunds WHERE payment_id = %s", (payment_id,))
        refunded = cur.fetchone()[0]
    assert refunded <= amount == Decimal("25.00")
    assert ledger(db, payment_id)[3] == refunded


def test_a_hold_older_than_hold_ttl_is_voided_by_reconciliation_and_the_trip_can_be_held_again(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = hold_app_with(HOLD_TTL=60)
    client = app.test_client()
    old = held(client, trips, trip_id=101)
    young = held(client, trips, trip_id=102)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = now() - interval '61 seconds' WHERE payment_id = %s", (old,))

    report = services(app).reconciler.run_once()

    assert report.counts() == {"expired": 1}
    assert stored(db, old)[0] == "VOIDED" and stored(db, young)[0] == "AUTHORIZED"
    assert ledger(db, old)[0] == "CANCELED"
    assert f"payment-{old}-voided" in outbox_ids(db)
    assert services(app).reconciler.run_once().counts() == {}
    trips.trip(101, status="ACCEPTED")
    assert authorize(client, 101, key="again").status_code == 201


class Unreachable(CountingGateway):
    """The gateway does not answer at all."""

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        raise GatewayUnavailableError("down")

    def void(self, charge: GatewayCharge) -> GatewayResult:
        raise GatewayUnavailableError("down")


def test_a_hold_that_expires_while_the_gateway_is_down_is_released_later_and_counted_as_expired(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = hold_app_with(HOLD_TTL=60)
    payment_id = held(app.test_client(), trips)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = now() - interval '1 day' WHERE payment_id = %s", (payment_id,))
    use_gateway(app, Unreachable(simulator(app, 1.0)))

    first = services(app).reconciler.run_once()
    use_gateway(app, simulator(app, 1.0))
    with db.cursor() as cur:  # the next pass, without waiting out the interval
        cur.execute("UPDATE payments SET reconcile_after = now() WHERE payment_id = %s", (payment_id,))
    second = services(app).reconciler.run_once()

    assert first.counts() == {"unavailable": 1}
    assert second.counts() == {"expired": 1}
    assert stored(db, payment_id)[0] == "VOIDED"
    assert outbox_ids(db)[-2:] == [f"payment-{payment_id}-expire-pending", f"payment-{payment_id}-voided"]


def test_a_dry_run_names_expired_holds_and_changes_nothing(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = hold_app_with(HOLD_TTL=60)
    payment_id = held(app.test_client(), trips)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = now() - interval '1 day' WHERE payment_id = %s", (payment_id,))

    report = services(app).reconciler.run_once(dry_run=True)

    assert [d.describe() for d in report.decisions] == [f"payment {payment_id}: expired -> VOIDED"]
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_metrics_count_holds_by_status_and_not_as_revenue(hold_client: FlaskClient, trips: FakeTripService) -> None:
    held(hold_client, trips)

    summary = hold_client.get("/metrics").get_json()

    assert summary["payments_by_status"]["AUTHORIZED"] == 1
    assert summary["payments_by_status"]["VOIDED"] == 0
    assert summary["total_revenue"] == 0


@pytest.mark.parametrize("path", ["capture", "void"])
def test_a_hold_on_a_gateway_not_configured_is_503_gateway_not_configured_and_changes_nothing(
    hold_client: FlaskClient, db: psycopg2.extensions.connection, path: str
) -> None:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, authorized_amount, method, status, reference, gateway,"
            " gateway_reference) VALUES (101, 39.06, 39.06, 'CARD', 'AUTHORIZED', 'PAY-X', 'stripe', 'pi_x')"
            " RETURNING payment_id"
        )
        payment_id = cur.fetchone()[0]

    response = hold_client.post(f"/v1/payments/{payment_id}/{path}")

    assert (response.status_code, response.get_json()["code"]) == (503, "gateway_not_configured")
    assert (response.get_json()["gateway"], "STRIPE_API_KEY" in response.get_json()["error"]) == ("stripe", True)
    assert stored(db, payment_id)[0] == "AUTHORIZED"


# --- loaded data and first-time writes under concurrency ----------------------------------------------


def test_every_loaded_payment_refuses_capture_and_void_with_its_status_and_its_trip_cannot_be_held(
    hold_client: FlaskClient, trips: FakeTripService, test_config: Config, db: psycopg2.extensions.connection
) -> None:
    conn = psycopg2.connect(test_config.get_database_uri(), options="-c timezone=UTC")
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()
    with db.cursor() as cur:
        cur.execute("SELECT payment_id, trip_id, status FROM payments ORDER BY payment_id")
        rows = cur.fetchall()
    assert {status for _, _, status in rows} == {"SUCCESS", "PENDING", "FAILED", "REFUNDED", "PARTIALLY_REFUNDED"}
    before = row_counts(db)

    for payment_id, _, status in rows:
        capture = hold_client.post(f"/v1/payments/{payment_id}/capture")
        void = hold_client.post(f"/v1/payments/{payment_id}/void")
        assert (capture.status_code, capture.get_json()["code"], capture.get_json()["payment_status"]) == (
            400, "payment_not_capturable", status,
        )  # fmt: skip
        assert (void.status_code, void.get_json()["code"]) == (400, "payment_not_voidable")

    assert row_counts(db) == before
    live = next(trip_id for _, trip_id, status in rows if status == "SUCCESS")
    trips.trip(live, status="ACCEPTED")
    response = authorize(hold_client, live)
    assert (response.status_code, response.get_json()["code"]) == (409, "trip_already_paid")


@pytest.mark.parametrize("round_", range(5))
def test_twenty_concurrent_authorizations_of_one_trip_with_different_keys_place_one_hold(
    hold_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection, round_: int
) -> None:
    trip_id = 700 + round_
    trips.trip(trip_id, status="ACCEPTED")
    gateway = use_gateway(hold_app, CountingGateway(simulator(hold_app, 1.0)))

    responses = all_at_once([lambda n=n: authorize(hold_app.test_client(), trip_id, key=f"k-{n}") for n in range(20)])

    outcomes = Counter(r.status_code for r in responses)
    assert outcomes == {201: 1, 409: 19}, outcomes
    winner = next(r for r in responses if r.status_code == 201).get_json()["payment_id"]
    assert {r.get_json()["payment_id"] for r in responses if r.status_code == 409} == {winner}
    assert gateway.calls == 1
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments WHERE trip_id = %s", (trip_id,))
        assert cur.fetchone()[0] == 1


@pytest.mark.parametrize("round_", range(5))
def test_twenty_concurrent_identical_authorizations_make_one_hold_and_the_rest_replay_or_wait(
    hold_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection, round_: int
) -> None:
    trip_id = 800 + round_
    trips.trip(trip_id, status="ACCEPTED")

    responses = all_at_once([lambda: authorize(hold_app.test_client(), trip_id, key="same") for _ in range(20)])

    assert {r.status_code for r in responses} <= {201, 409}
    assert {r.get_json().get("code") for r in responses if r.status_code == 409} <= {"idempotency_key_in_use"}
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments WHERE trip_id = %s", (trip_id,))
        assert cur.fetchone()[0] == 1
    first = next(r for r in responses if r.status_code == 201)
    assert all(r.get_data() == first.get_data() for r in responses if r.status_code == 201)


@pytest.mark.parametrize("round_", range(5))
def test_twenty_concurrent_captures_with_one_key_capture_once_and_replay_the_answer(
    hold_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection, round_: int
) -> None:
    payment_id = held(hold_app.test_client(), trips, trip_id=900 + round_)
    trips.trip(900 + round_, status="COMPLETED", distance_km=8)
    gateway = use_gateway(hold_app, CountingGateway(simulator(hold_app, 1.0)))

    def capture() -> Any:
        return hold_app.test_client().post(f"/v1/payments/{payment_id}/capture", json={"idempotency_key": "cap"})

    responses = all_at_once([capture for _ in range(20)])

    assert {r.status_code for r in responses} <= {200, 409}
    assert {r.get_json().get("code") for r in responses if r.status_code == 409} <= {"idempotency_key_in_use"}
    ok = [r.get_data() for r in responses if r.status_code == 200]
    assert ok and len(set(ok)) == 1
    assert gateway.captures == 1
    assert stored(db, payment_id)[:2] == ("SUCCESS", Decimal("25.00"))


def test_a_capture_takes_the_rider_and_driver_the_trip_service_names_at_the_end(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="REQUESTED", distance_km=10.5, rider_id=7)
    payment_id = authorize(hold_client, 101).get_json()["payment_id"]
    trips.trip(101, status="COMPLETED", distance_km=8, rider_id=7, driver_id=9)

    captured = hold_client.post(f"/v1/payments/{payment_id}/capture").get_json()

    assert (captured["rider_id"], captured["driver_id"]) == (7, 9)
    listed = hold_client.get("/v1/payments?driver_id=9").get_json()["payments"]
    assert [p["payment_id"] for p in listed] == [payment_id]


def test_a_capture_whose_trip_now_names_another_rider_is_400_and_the_hold_stands(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101, status="ACCEPTED", rider_id=7)
    payment_id = authorize(hold_client, 101).get_json()["payment_id"]
    trips.trip(101, status="COMPLETED", distance_km=8, rider_id=8)

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert (response.status_code, response.get_json()["code"], response.get_json()["field"]) == (
        400, "trip_party_mismatch", "rider_id",
    )  # fmt: skip
    assert "the hold stands" in response.get_json()["error"]
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_an_amount_captured_on_a_cancelled_trip_without_a_fee_is_400_and_says_the_hold_stands(
    hold_app_with: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = hold_app_with(CANCELLATION_FEE=Decimal("0")).test_client()
    payment_id = held(client, trips)
    trips.trip(101, status="CANCELLED")

    response = client.post(f"/v1/payments/{payment_id}/capture", json={"amount": 2})

    assert (response.status_code, response.get_json()["code"]) == (400, "no_cancellation_fee")
    assert "the hold stands: void it" in response.get_json()["error"]
    assert stored(db, payment_id)[0] == "AUTHORIZED"


def test_the_receipt_of_a_hold_captured_days_later_is_paid_on_the_day_of_the_capture(
    hold_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = held(hold_client, trips)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = '2026-01-02 10:00+00' WHERE payment_id = %s", (payment_id,))
    trips.trip(101, status="COMPLETED", distance_km=8)
    hold_client.post(f"/v1/payments/{payment_id}/capture")

    receipt = hold_client.get(f"/v1/payments/{payment_id}/receipt").get_json()["receipt_data"]
    html = hold_client.get(f"/v1/payments/{payment_id}/receipt", headers={"Accept": "text/html"}).get_data(True)

    assert receipt["hold"]["authorized_at"] == "2026-01-02T10:00:00+00:00"
    captured_at = datetime.fromisoformat(receipt["hold"]["captured_at"])
    assert captured_at.date() == datetime.now(UTC).date()
    assert f"Paid on</dt><dd>{captured_at:%d %b %Y}" in html
    assert "held on 02 Jan 2026" in html


@pytest.mark.parametrize(
    ("status", "hint"),
    [("VOIDED", "the trip can be charged"), ("PENDING", "in progress"), ("FAILED", "nothing is held")],
)
def test_a_payment_that_cannot_be_captured_says_what_its_status_means(
    hold_client: FlaskClient, insert_payment: Callable[..., int], status: str, hint: str
) -> None:
    payment_id = insert_payment(status=status, authorized_amount=Decimal("39.06"))

    response = hold_client.post(f"/v1/payments/{payment_id}/capture")

    assert (response.status_code, response.get_json()["payment_status"]) == (400, status)
    assert hint in response.get_json()["error"]


def test_refused_hold_operations_are_counted_as_refused(
    hold_app: Flask, hold_client: FlaskClient, trips: FakeTripService
) -> None:
    payment_id = held(hold_client, trips)
    trips.trip(101, status="COMPLETED", distance_km=8)
    use_gateway(hold_app, ReleasedElsewhere(simulator(hold_app, 1.0)))

    hold_client.post(f"/v1/payments/{payment_id}/capture")

    text = hold_client.get("/metrics/prometheus").get_data(True)
    assert 'payment_hold_operations_total{operation="capture",status="refused"}' in text


def test_expired_holds_of_a_gateway_not_configured_are_left_alone_and_logged(
    hold_app_with: Callable[..., Flask], db: psycopg2.extensions.connection, caplog: pytest.LogCaptureFixture
) -> None:
    app = hold_app_with(HOLD_TTL=60)
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, authorized_amount, method, status, reference, gateway,"
            " gateway_reference, created_at) VALUES (101, 39.06, 39.06, 'CARD', 'AUTHORIZED', 'PAY-X', 'stripe',"
            " 'pi_x', now() - interval '1 day') RETURNING payment_id"
        )
        payment_id = cur.fetchone()[0]

    with caplog.at_level("WARNING"):
        report = services(app).reconciler.run_once()

    assert report.counts() == {}
    assert stored(db, payment_id)[0] == "AUTHORIZED"
    [warning] = [r for r in caplog.records if "expired holds of a gateway not configured here" in r.getMessage()]
    assert (warning.gateway, warning.holds) == ("stripe", 1)
