"""GATEWAY=stripe end to end: the service, the official SDK and a real Stripe-compatible server (localstripe)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from services.gateways import GatewayCharge
from services.gateways.stripe.gateway import UnpayableAmountError, minor_units
from tests.fakes import FakeTripService
from tests.helpers import wait_until
from tests.stripe_server import API_KEY, GatewayProxy, LocalStripe


def charge(app: Flask, key: str = "key-1", trip_id: int = 101, **fields: Any) -> Any:
    body = {"idempotency_key": key, "trip_id": trip_id, "method": "CARD", "payment_method": "pm_card_visa", **fields}
    return app.test_client().post("/v1/payments/charge", json=body)


def refund(app: Flask, payment_id: int, key: str | None = None, **fields: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return app.test_client().post(f"/v1/payments/{payment_id}/refund", json=fields, headers=headers)


def payment_row(db: psycopg2.extensions.connection, payment_id: int) -> tuple:
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, error_code, gateway, gateway_reference FROM payments WHERE payment_id = %s", (payment_id,)
        )
        return cur.fetchone()


def outbox_ids(db: psycopg2.extensions.connection) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT notification_id FROM notification_outbox ORDER BY notification_id")
        return [row[0] for row in cur.fetchall()]


def test_a_card_charge_is_one_succeeded_payment_intent_of_the_fare_in_minor_units(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)

    response = charge(stripe_app)

    assert response.status_code == 201
    body = response.get_json()
    assert (body["status"], body["amount"], body["gateway"]) == ("SUCCESS", 31.25, "stripe")
    [intent] = localstripe.payment_intents()
    assert (intent.id, intent.amount, intent.currency, intent.status) == (
        body["gateway_reference"], 3125, "inr", "succeeded",
    )  # fmt: skip
    assert intent.metadata.to_dict() == {"payment_id": str(body["payment_id"]), "trip_id": "101"}
    assert payment_row(db, body["payment_id"]) == ("SUCCESS", None, "stripe", intent.id)


def test_a_declined_card_is_202_failed_card_declined_and_the_trip_can_be_charged_again(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101)

    declined = charge(stripe_app, key="first", payment_method="pm_card_chargeCustomerFail")
    again = charge(stripe_app, key="second", payment_method="pm_card_visa")

    assert declined.status_code == 202
    assert (declined.get_json()["status"], declined.get_json()["error_code"]) == ("FAILED", "CARD_DECLINED")
    assert (again.status_code, again.get_json()["status"]) == (201, "SUCCESS")
    statuses = sorted(intent.status for intent in localstripe.payment_intents())
    assert statuses == ["requires_payment_method", "succeeded"]


def test_a_card_charge_without_a_payment_method_is_400_payment_method_required_and_writes_nothing(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)

    response = stripe_app.test_client().post(
        "/v1/payments/charge", json={"idempotency_key": "k", "trip_id": 101, "method": "UPI"}
    )

    assert (response.status_code, response.get_json()["code"]) == (400, "payment_method_required")
    assert response.get_json()["field"] == "payment_method"
    assert localstripe.payment_intents() == []
    with db.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM idempotency_keys)")
        assert cur.fetchone()[0] == 0


def test_cash_never_calls_stripe(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, stripe_proxy: GatewayProxy
) -> None:
    trips.trip(101)

    response = stripe_app.test_client().post(
        "/v1/payments/charge", json={"idempotency_key": "k", "trip_id": 101, "method": "cash"}
    )

    assert (response.status_code, response.get_json()["gateway"]) == (201, None)
    assert stripe_proxy.seen == []


def test_an_unknown_payment_method_token_fails_the_payment_with_gateway_error(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101)

    response = charge(stripe_app, payment_method="pm_does_not_exist")

    assert (response.status_code, response.get_json()["status"]) == (202, "FAILED")
    assert response.get_json()["error_code"] == "GATEWAY_ERROR"
    assert localstripe.payment_intents() == []


def test_a_refund_creates_a_stripe_refund_of_that_amount(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    paid = charge(stripe_app).get_json()

    response = refund(stripe_app, paid["payment_id"], amount=10.5, reason="detour")

    assert response.status_code == 200
    body = response.get_json()
    assert (body["refund_status"], body["amount_refunded"], body["status"]) == (
        "SUCCEEDED", 10.5, "PARTIALLY_REFUNDED",
    )  # fmt: skip
    [made] = localstripe.refunds(paid["gateway_reference"])
    assert (made.amount, made.status, made.metadata["refund_id"]) == (1050, "succeeded", str(body["refund_id"]))
    with db.cursor() as cur:
        cur.execute("SELECT status, gateway, gateway_reference FROM payment_refunds")
        assert cur.fetchall() == [("SUCCEEDED", "stripe", made.id)]


def test_replayed_charge_and_refund_create_no_second_payment_intent_or_refund(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe
) -> None:
    trips.trip(101)
    first = charge(stripe_app)
    replay = charge(stripe_app)
    refunded = refund(stripe_app, first.get_json()["payment_id"], key="r-1", amount=5)
    refund_replay = refund(stripe_app, first.get_json()["payment_id"], key="r-1", amount=5)

    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_data() == first.get_data()
    assert refund_replay.headers["Idempotent-Replayed"] == "true"
    assert refund_replay.get_data() == refunded.get_data()
    [intent] = localstripe.payment_intents()
    assert len(localstripe.refunds(intent.id)) == 1


@pytest.mark.parametrize("failure", ["down", "hang"])
def test_with_stripe_unreachable_a_charge_is_202_pending_then_settles_success_when_it_returns(
    failure: str,
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    stripe_proxy.mode, stripe_proxy.hang_seconds = failure, 3

    pending = charge(stripe_app)
    stripe_proxy.mode = "pass"
    report = services(stripe_app).reconciler.run_once()

    assert (pending.status_code, pending.get_json()["status"]) == (202, "PENDING")
    payment_id = pending.get_json()["payment_id"]
    assert [d.result for d in report.decisions] == ["succeeded"]
    assert stripe_app.test_client().get(f"/v1/payments/{payment_id}").get_json()["status"] == "SUCCESS"
    [intent] = localstripe.payment_intents()
    assert (intent.status, intent.amount) == ("succeeded", 3125)
    assert payment_row(db, payment_id) == ("SUCCESS", None, "stripe", intent.id)
    assert outbox_ids(db) == [f"payment-{payment_id}-pending", f"payment-{payment_id}-success"]


def test_a_confirmation_whose_answer_is_lost_is_settled_from_stripe_without_confirming_twice(
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    stripe_proxy.mode, stripe_proxy.only = "lose_answer", "/confirm"

    pending = charge(stripe_app)
    stripe_proxy.mode = "pass"
    services(stripe_app).reconciler.run_once()
    retry = charge(stripe_app)

    assert pending.get_json()["status"] == "PENDING"
    [intent] = localstripe.payment_intents()
    assert intent.status == "succeeded"
    confirms = [path for method, path in stripe_proxy.seen if path.endswith("/confirm")]
    assert len(confirms) == 1
    assert payment_row(db, pending.get_json()["payment_id"])[0] == "SUCCESS"
    # A stored answer is replayed as first sent (contract section 8); GET shows the settled state.
    assert retry.get_data() == pending.get_data()


def test_a_refund_stripe_refuses_is_502_gateway_refund_failed_and_nothing_counts(
    stripe_app: Flask, trips: FakeTripService, localstripe: LocalStripe, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    paid = charge(stripe_app).get_json()
    with db.cursor() as cur:  # the PaymentIntent disappears at Stripe's end (e.g. another account)
        cur.execute("UPDATE payments SET gateway_reference = 'pi_unknown' WHERE payment_id = %s", (paid["payment_id"],))

    response = refund(stripe_app, paid["payment_id"])

    assert (response.status_code, response.get_json()["code"]) == (502, "gateway_refund_failed")
    after = stripe_app.test_client().get(f"/v1/payments/{paid['payment_id']}").get_json()
    assert (after["status"], after["amount_refunded"]) == ("SUCCESS", 0.0)
    with db.cursor() as cur:
        cur.execute("SELECT status, refund_amount FROM payment_refunds")
        assert cur.fetchall() == [("FAILED", Decimal("31.25"))]


def test_a_refund_without_an_answer_is_pending_and_reconciliation_finds_it_at_stripe(
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    paid = charge(stripe_app).get_json()
    stripe_proxy.mode, stripe_proxy.only = "lose_answer", "/v1/refunds"

    pending = refund(stripe_app, paid["payment_id"], amount=20)
    stripe_proxy.mode = "pass"
    page = stripe_app.test_client().get(f"/v1/payments/{paid['payment_id']}/receipt", headers={"Accept": "text/html"})
    report = services(stripe_app).reconciler.run_once()

    assert (pending.status_code, pending.get_json()["refund_status"]) == (200, "PENDING")
    assert pending.get_json()["remaining_amount"] == 11.25
    assert "pending at the bank" in page.get_data(as_text=True)
    assert [(d.kind, d.result) for d in report.decisions] == [("refund", "succeeded")]
    assert len(localstripe.refunds(paid["gateway_reference"])) == 1
    with db.cursor() as cur:
        cur.execute("SELECT status FROM payment_refunds")
        assert cur.fetchall() == [("SUCCEEDED",)]
    assert f"refund-{pending.get_json()['refund_id']}-succeeded" in outbox_ids(db)


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [("31.25", "INR", 3125), ("0.01", "USD", 1), ("99999999.99", "INR", 9999999999), ("500", "JPY", 500),
     ("1.234", "KWD", 1234)],
)  # fmt: skip
def test_amounts_go_to_stripe_in_the_currency_s_smallest_unit(amount: str, currency: str, units: int) -> None:
    assert minor_units(Decimal(amount), currency) == units


def test_an_amount_a_zero_decimal_currency_cannot_carry_is_refused_not_rounded() -> None:
    with pytest.raises(UnpayableAmountError, match="VND"):
        minor_units(Decimal("100.50"), "VND")


def test_an_attempt_on_a_payment_settled_meanwhile_moves_no_money(
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    stripe_proxy.mode = "down"
    payment_id = charge(stripe_app).get_json()["payment_id"]
    stripe_proxy.mode = "pass"
    with db.cursor() as cur:  # settled by someone else (e.g. another reconciler) in the meantime
        cur.execute("UPDATE payments SET status = 'FAILED', error_code = 'GATEWAY_NO_RECORD'")

    graph = services(stripe_app)
    result = graph.charges.attempt(
        GatewayCharge(payment_id, 101, Decimal("31.25"), "INR", "CARD", "pm_card_visa"), graph.gateways.get("stripe")
    )

    assert result.status == "PENDING"
    assert [intent.status for intent in localstripe.payment_intents()] == ["requires_confirmation"]
    assert payment_row(db, payment_id)[:2] == ("FAILED", "GATEWAY_NO_RECORD")


def test_a_refund_whose_answer_cannot_be_read_stays_pending_and_is_never_made_twice(
    stripe_app: Flask,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    paid = charge(stripe_app).get_json()
    stripe_proxy.mode, stripe_proxy.only = "garble_answer", "/v1/refunds"

    first = refund(stripe_app, paid["payment_id"], key="gr-1", amount=5)
    stripe_proxy.mode = "pass"
    retry = refund(stripe_app, paid["payment_id"], key="gr-1", amount=5)
    services(stripe_app).reconciler.run_once()

    assert (first.status_code, first.get_json()["refund_status"]) == (200, "PENDING")
    assert retry.get_data() == first.get_data()
    assert [r.amount for r in localstripe.refunds(paid["gateway_reference"])] == [500]
    with db.cursor() as cur:
        cur.execute("SELECT status, refund_amount FROM payment_refunds")
        assert cur.fetchall() == [("SUCCEEDED", Decimal("5.00"))]
        cur.execute("SELECT amount_refunded FROM payments")
        assert cur.fetchone() == (Decimal("5.00"),)


def test_reconciliation_leaves_a_charge_in_flight_alone_even_when_told_nothing_is_too_young(
    make_app: Any,
    trips: FakeTripService,
    localstripe: LocalStripe,
    stripe_proxy: GatewayProxy,
    notifications: Any,
    db: psycopg2.extensions.connection,
) -> None:
    app = make_app(
        GATEWAY="stripe", STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=stripe_proxy.url, GATEWAY_TIMEOUT=10.0,
        TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, NOTIFY_DISPATCHER_ENABLED=False,
        RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, RECONCILE_NO_RECORD_AFTER=0,
    )  # fmt: skip
    trips.trip(101)
    stripe_proxy.mode, stripe_proxy.only, stripe_proxy.hang_seconds = "slow_answer", "/v1/payment_intents", 2
    answer: list[Any] = []
    in_flight = threading.Thread(target=lambda: answer.append(charge(app)))
    in_flight.start()
    assert wait_until(lambda: len(stripe_proxy.forwarded) == 1, timeout=10)

    report = services(app).reconciler.run_once()
    in_flight.join(30)

    assert report.decisions == []
    assert (answer[0].status_code, answer[0].get_json()["status"]) == (201, "SUCCESS")
    [intent] = localstripe.payment_intents()
    assert intent.status == "succeeded"


def test_a_refund_with_more_decimals_than_the_currency_has_is_400_naming_the_amount_and_writes_nothing(
    make_app: Any,
    trips: FakeTripService,
    localstripe: LocalStripe,
    notifications: Any,
    db: psycopg2.extensions.connection,
) -> None:
    app = make_app(
        GATEWAY="stripe", STRIPE_API_KEY=API_KEY, STRIPE_API_BASE=localstripe.url, CURRENCY="JPY",
        TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, NOTIFY_DISPATCHER_ENABLED=False,
        RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0,
    )  # fmt: skip
    trips.trip(101)
    paid = charge(app, amount=100).get_json()

    response = refund(app, paid["payment_id"], amount=0.5)
    report = services(app).reconciler.run_once()

    assert paid["status"] == "SUCCESS"
    assert (response.status_code, response.get_json()["code"]) == (400, "validation_error")
    assert response.get_json()["field"] == "amount"
    after = app.test_client().get(f"/v1/payments/{paid['payment_id']}").get_json()
    assert (after["status"], after["amount_refunded"]) == ("SUCCESS", 0.0)
    assert report.decisions == []
    assert localstripe.refunds(paid["gateway_reference"]) == []
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payment_refunds")
        assert cur.fetchone()[0] == 0
