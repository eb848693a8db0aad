"""Holds with GATEWAY=stripe: manual-capture PaymentIntents at a real Stripe-compatible server (localstripe)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from services.gateways import AUTHORIZED, SUCCESS, GatewayCharge
from services.gateways.stripe.gateway import StripeGateway
from tests.fakes import FakeTripService
from tests.stripe_server import API_KEY, GatewayProxy, LocalStripe


def authorize(app: Flask, trip_id: int = 101, key: str = "hold-1", **fields: Any) -> Any:
    body = {"idempotency_key": key, "trip_id": trip_id, "method": "CARD", "payment_method": "pm_card_visa", **fields}
    return app.test_client().post("/v1/payments/authorize", json=body)


def status_of(db: psycopg2.extensions.connection, payment_id: int) -> tuple:
    with db.cursor() as cur:
        cur.execute("SELECT status, amount, authorized_amount FROM payments WHERE payment_id = %s", (payment_id,))
        return cur.fetchone()


def test_the_life_of_a_trip_is_one_payment_intent_held_captured_for_the_fare_and_refunded(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    client = stripe_app.test_client()
    trips.trip(101, status="ACCEPTED", distance_km=10.5)

    hold = authorize(stripe_app)

    assert hold.status_code == 201
    body = hold.get_json()
    assert (body["status"], body["authorized_amount"], body["gateway"]) == ("AUTHORIZED", 39.06, "stripe")
    [intent] = localstripe.payment_intents()
    assert (intent.id, intent.amount, intent.status, intent.capture_method) == (
        body["gateway_reference"], 3906, "requires_capture", "manual",
    )  # fmt: skip

    trips.trip(101, status="COMPLETED", distance_km=8)
    captured = client.post(f"/v1/payments/{body['payment_id']}/capture")

    assert captured.status_code == 200
    assert (captured.get_json()["status"], captured.get_json()["amount"]) == ("SUCCESS", 25.0)
    [intent] = localstripe.payment_intents()
    assert (intent.status, localstripe.captured(intent)) == ("succeeded", 2500)

    refunded = client.post(f"/v1/payments/{body['payment_id']}/refund", json={"amount": 10})
    assert (refunded.status_code, refunded.get_json()["refund_status"]) == (200, "SUCCEEDED")
    [made] = [r for r in localstripe.refunds(intent.id) if "refund_id" in (r.metadata or {})]
    assert (made.amount, made.status, made.metadata["refund_id"]) == (
        1000, "succeeded", str(refunded.get_json()["refund_id"]),
    )  # fmt: skip

    receipt = client.get(f"/v1/payments/{body['payment_id']}/receipt")
    assert receipt.status_code == 200
    hold_part = receipt.get_json()["receipt_data"]["hold"]
    assert (hold_part["authorized_amount"], hold_part["captured_amount"]) == (39.06, 25.0)
    assert hold_part["captured_at"] >= hold_part["authorized_at"]
    assert status_of(db, body["payment_id"])[0] == "PARTIALLY_REFUNDED"


def test_a_void_cancels_the_payment_intent(stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe) -> None:
    trips.trip(101, status="ACCEPTED")
    payment_id = authorize(stripe_app).get_json()["payment_id"]

    response = stripe_app.test_client().post(f"/v1/payments/{payment_id}/void")

    assert (response.status_code, response.get_json()["status"]) == (200, "VOIDED")
    [intent] = localstripe.payment_intents()
    assert intent.status == "canceled"


def test_a_declined_card_cannot_be_held(stripe_app: Flask, trips: FakeTripService) -> None:
    trips.trip(101, status="ACCEPTED")

    response = authorize(stripe_app, payment_method="pm_card_chargeCustomerFail")

    assert (response.status_code, response.get_json()["status"]) == (202, "FAILED")
    assert response.get_json()["error_code"] == "CARD_DECLINED"


@pytest.mark.parametrize("failure", ["down", "lose_answer"])
def test_a_capture_without_an_answer_is_pending_and_reconciliation_captures_exactly_once(
    failure: str,
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101, status="ACCEPTED")
    payment_id = authorize(stripe_app).get_json()["payment_id"]
    trips.trip(101, status="COMPLETED", distance_km=8)
    stripe_proxy.mode, stripe_proxy.only = failure, "/capture"

    pending = stripe_app.test_client().post(f"/v1/payments/{payment_id}/capture")
    stripe_proxy.mode = "pass"
    report = services(stripe_app).reconciler.run_once()

    assert (pending.status_code, pending.get_json()["status"]) == (202, "PENDING")
    assert report.counts() == {"captured": 1}
    assert status_of(db, payment_id)[:2] == ("SUCCESS", 25)
    [intent] = localstripe.payment_intents()
    assert (intent.status, localstripe.captured(intent)) == ("succeeded", 2500)
    captures_received = [path for _, path in stripe_proxy.forwarded if path.endswith("/capture")]
    # "down": the first never arrived, reconciliation sent it; "lose_answer": it arrived, was found captured.
    assert len(captures_received) == 1


def test_an_expired_hold_is_cancelled_at_stripe(
    stripe_app_with: Any, trips: FakeTripService, localstripe: LocalStripe,
    db: psycopg2.extensions.connection,
) -> None:  # fmt: skip
    app = stripe_app_with(HOLD_TTL=60)
    trips.trip(101, status="ACCEPTED")
    payment_id = authorize(app).get_json()["payment_id"]
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = now() - interval '2 minutes' WHERE payment_id = %s", [payment_id])

    assert services(app).reconciler.run_once().counts() == {"expired": 1}
    assert status_of(db, payment_id)[0] == "VOIDED"
    [intent] = localstripe.payment_intents()
    assert intent.status == "canceled"


def test_a_capture_stripe_refuses_answers_where_the_payment_intent_stands(localstripe: LocalStripe) -> None:
    gateway = StripeGateway(API_KEY, localstripe.url, timeout=5)
    hold = GatewayCharge(8, 80, Decimal("39.06"), "INR", "CARD", "pm_card_visa", capture=False)
    held = dataclasses.replace(hold, reference=gateway.register(hold))
    assert gateway.authorize(held).status == AUTHORIZED

    # More than the hold: Stripe refuses (400), and the PaymentIntent still requires capture.
    refused = gateway.capture(held, Decimal("50.00"))

    assert (refused.status, refused.reference) == (AUTHORIZED, held.reference)
    assert gateway.capture(held, Decimal("25.00")).status == SUCCESS
    # A void after the capture is refused too, and says the money was taken.
    assert gateway.void(held).status == SUCCESS


def test_a_hold_in_a_zero_decimal_currency_is_rounded_half_up_to_the_yen_and_an_amount_with_decimals_is_400(
    stripe_app_with: Any, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    app = stripe_app_with(CURRENCY="JPY")
    trips.trip(101, status="ACCEPTED", distance_km=10.5)
    trips.trip(102, status="ACCEPTED", distance_km=10.5)

    held = authorize(app, 101)
    refused = authorize(app, 102, key="hold-2", amount=10.5)

    # 31.25 x 1.25 = 39.0625 -> 39 yen, rounded once like any fare (and never below the fare's 31).
    assert (held.status_code, held.get_json()["authorized_amount"]) == (201, 39)
    [intent] = localstripe.payment_intents()
    assert (intent.amount, intent.currency) == (39, "jpy")
    assert (refused.status_code, refused.get_json()["code"], refused.get_json()["field"]) == (
        400, "validation_error", "amount",
    )  # fmt: skip
    assert "whole number of JPY" in refused.get_json()["error"]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments WHERE trip_id = 102")
        assert cur.fetchone()[0] == 0


def test_a_final_fare_in_a_zero_decimal_currency_is_rounded_to_the_yen_and_captured(
    stripe_app_with: Any, trips: FakeTripService, localstripe: LocalStripe,
    db: psycopg2.extensions.connection,
) -> None:  # fmt: skip
    app = stripe_app_with(CURRENCY="JPY")
    trips.trip(101, status="ACCEPTED", distance_km=10.5)
    payment_id = authorize(app, 101).get_json()["payment_id"]
    trips.trip(101, status="COMPLETED", distance_km=8.5)  # 5 + 21.25 = 26.25 yen -> 26

    response = app.test_client().post(f"/v1/payments/{payment_id}/capture")

    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["status"], response.get_json()["amount"]) == ("SUCCESS", 26)
    assert response.get_json()["authorized_amount"] == 39
    [intent] = localstripe.payment_intents()
    assert (intent.status, localstripe.captured(intent)) == ("succeeded", 26)
    assert status_of(db, payment_id) == ("SUCCESS", Decimal("26.00"), Decimal("39.00"))
