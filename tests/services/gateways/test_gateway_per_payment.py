"""Each payment keeps the gateway that made it: switching GATEWAY moves new payments only.

The must-show of issue 30: payments made on the simulator, then the service restarted with
GATEWAY=stripe (the simulator still configured, as in every mode but production): each is still
refunded, captured, voided and reconciled on the simulator, and its transactions say so.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2
from flask import Flask

from api.services import services
from tests.fakes import FakeTripService
from tests.gateways import simulator, use_gateway
from tests.helpers import assert_ledger_holds
from tests.stripe_server import LocalStripe

CARD = {"method": "CARD", "payment_method": "pm_card_visa"}


def post(app: Flask, path: str, key: str, **body: Any) -> Any:
    """POST with an idempotency key; the JSON answer."""
    response = app.test_client().post(path, json=body, headers={"Idempotency-Key": key})
    assert response.status_code < 300, response.get_json()
    return response.get_json()


def transactions(app: Flask, payment_id: int) -> list[tuple[str, str, str | None]]:
    """(kind, status, gateway) of each transaction of the payment, oldest first."""
    body = app.test_client().get(f"/v1/payments/{payment_id}/transactions").get_json()
    return [(t["kind"], t["status"], t["gateway"]) for t in body["transactions"]]


def simulator_rows(db: psycopg2.extensions.connection) -> dict[str, str]:
    """The simulator's own ledger: status by gateway idempotency key."""
    with db.cursor() as cur:
        cur.execute("SELECT idempotency_key, status FROM simulator_transactions")
        return dict(cur.fetchall())


def test_payments_made_on_the_simulator_stay_on_it_after_gateway_becomes_stripe(
    make_app: Callable[..., Flask],
    stripe_app_with: Callable[..., Flask],
    trips: FakeTripService,
    localstripe: LocalStripe,
    db: psycopg2.extensions.connection,
) -> None:
    before = make_app(
        GATEWAY="simulator", GATEWAY_SUCCESS_RATE=1.0, TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0,
        NOTIFY_DISPATCHER_ENABLED=False, RATE_LIMIT_ENABLED=False,
    )  # fmt: skip
    trips.trip(101)
    charged = post(before, "/v1/payments/charge", "charge-101", trip_id=101, **CARD)
    for trip_id in (102, 103):
        trips.trip(trip_id, status="ONGOING")
    captured = post(before, "/v1/payments/authorize", "hold-102", trip_id=102, **CARD)
    voided = post(before, "/v1/payments/authorize", "hold-103", trip_id=103, **CARD)
    # One charge the simulator leaves undecided: reconciliation must settle it, on the simulator.
    use_gateway(before, simulator(before, success_rate=1.0, pending_rate=1.0))
    trips.trip(104)
    pending = post(before, "/v1/payments/charge", "charge-104", trip_id=104, **CARD)
    assert (charged["status"], captured["status"], voided["status"], pending["status"]) == (
        "SUCCESS", "AUTHORIZED", "AUTHORIZED", "PENDING",
    )  # fmt: skip

    after = stripe_app_with(GATEWAY_SUCCESS_RATE=1.0, GATEWAY_SETTLE_SECONDS=0.0)
    assert services(after).gateways.default.name == "stripe"
    assert "simulator" in services(after).gateways
    trips.trip(102, status="COMPLETED")
    trips.trip(103, status="COMPLETED")
    refunded = post(after, f"/v1/payments/{charged['payment_id']}/refund", "refund-101", amount=5)
    capture = post(after, f"/v1/payments/{captured['payment_id']}/capture", "capture-102")
    void = post(after, f"/v1/payments/{voided['payment_id']}/void", "void-103")
    report = services(after).reconciler.run_once()
    # A new payment goes to Stripe.
    trips.trip(105)
    new = post(after, "/v1/payments/charge", "charge-105", trip_id=105, **CARD)

    assert (refunded["refund_status"], capture["status"], void["status"]) == ("SUCCEEDED", "SUCCESS", "VOIDED")
    assert [(d.payment_id, d.result) for d in report.decisions] == [(pending["payment_id"], "succeeded")]
    assert (new["status"], new["gateway"]) == ("SUCCESS", "stripe")
    ledger = simulator_rows(db)
    assert ledger[f"refund-{refunded['refund_id']}"] == "SUCCEEDED"
    assert ledger[f"payment-{captured['payment_id']}"] == "SUCCEEDED"
    assert ledger[f"payment-{voided['payment_id']}"] == "CANCELED"
    assert ledger[f"payment-{pending['payment_id']}"] == "SUCCEEDED"
    assert [intent.id for intent in localstripe.payment_intents()] == [new["gateway_reference"]]
    assert transactions(after, charged["payment_id"]) == [
        ("PURCHASE", "SUCCEEDED", "simulator"), ("REFUND", "SUCCEEDED", "simulator"),
    ]  # fmt: skip
    assert transactions(after, captured["payment_id"]) == [
        ("AUTHORIZE", "SUCCEEDED", "simulator"), ("CAPTURE", "SUCCEEDED", "simulator"),
    ]  # fmt: skip
    assert transactions(after, voided["payment_id"]) == [
        ("AUTHORIZE", "SUCCEEDED", "simulator"), ("VOID", "SUCCEEDED", "simulator"),
    ]  # fmt: skip
    assert transactions(after, pending["payment_id"]) == [("PURCHASE", "SUCCEEDED", "simulator")]
    assert transactions(after, new["payment_id"]) == [("PURCHASE", "SUCCEEDED", "stripe")]
    assert Decimal(capture["amount"]) > 0
    assert_ledger_holds(db)


def test_an_operation_on_a_payment_whose_gateway_is_gone_is_503_naming_it_and_writes_nothing(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(GATEWAY_SUCCESS_RATE=1.0, TRIP_SERVICE_URL=trips.url, RATE_LIMIT_ENABLED=False)
    trips.trip(101)
    paid = post(app, "/v1/payments/charge", "charge-101", trip_id=101, **CARD)
    trips.trip(102, status="ONGOING")
    held = post(app, "/v1/payments/authorize", "hold-102", trip_id=102, **CARD)
    trips.trip(102)
    with db.cursor() as cur:  # as if made by a gateway this process no longer has
        cur.execute("UPDATE payments SET gateway = 'retired'")
        cur.execute("SELECT (SELECT count(*) FROM payment_transactions), (SELECT count(*) FROM payment_refunds)")
        counts = cur.fetchone()

    client = app.test_client()
    answers = [
        client.post(f"/v1/payments/{paid['payment_id']}/refund", json={}, headers={"Idempotency-Key": "r"}),
        client.post(f"/v1/payments/{held['payment_id']}/capture", json={}, headers={"Idempotency-Key": "c"}),
        client.post(f"/v1/payments/{held['payment_id']}/void", json={}, headers={"Idempotency-Key": "v"}),
    ]

    for answer in answers:
        assert (answer.status_code, answer.get_json()["code"], answer.get_json()["gateway"]) == (
            503, "gateway_not_configured", "retired",
        )  # fmt: skip
    with db.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM payment_transactions), (SELECT count(*) FROM payment_refunds)")
        assert cur.fetchone() == counts
        cur.execute("SELECT status FROM payments ORDER BY payment_id")
        assert [row[0] for row in cur.fetchall()] == ["SUCCESS", "AUTHORIZED"]
        cur.execute("SELECT count(*) FROM idempotency_keys")
        assert cur.fetchone()[0] == 2  # the two first requests' keys only: the refused ones were given back


def test_a_charge_key_replays_its_answer_after_gateway_changes_to_one_that_needs_a_payment_method(
    make_app: Callable[..., Flask], stripe_app_with: Callable[..., Flask], trips: FakeTripService
) -> None:
    before = make_app(GATEWAY_SUCCESS_RATE=1.0, TRIP_SERVICE_URL=trips.url, RATE_LIMIT_ENABLED=False)
    trips.trip(101)
    body = {"trip_id": 101, "method": "CARD"}
    first = before.test_client().post("/v1/payments/charge", json=body, headers={"Idempotency-Key": "switch-1"})

    after = stripe_app_with()
    again = after.test_client().post("/v1/payments/charge", json=body, headers={"Idempotency-Key": "switch-1"})
    fresh = after.test_client().post(
        "/v1/payments/charge", json={"trip_id": 102, "method": "CARD"}, headers={"Idempotency-Key": "new-1"}
    )

    assert first.status_code == 201
    assert (again.status_code, again.data, again.headers.get("Idempotent-Replayed")) == (201, first.data, "true")
    assert (fresh.status_code, fresh.get_json()["code"]) == (400, "payment_method_required")
