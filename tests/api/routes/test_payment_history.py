"""GET /v1/payments/<id>/transactions and /refunds: a payment's history and refund records, oldest first."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

TRANSACTION_KEYS = {
    "transaction_id", "payment_id", "kind", "status", "amount", "currency", "gateway", "gateway_reference",
    "error_code", "refund_id", "created_at", "updated_at",
}  # fmt: skip
REFUND_KEYS = {
    "refund_id", "payment_id", "refund_amount", "currency", "refund_status", "reason", "gateway",
    "gateway_reference", "error_code", "created_at", "updated_at",
}  # fmt: skip
INSERT_TRANSACTION = """
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, gateway_reference, error_code,
                                  refund_id, created_at, updated_at)
VALUES (%(payment_id)s, %(kind)s, %(status)s, %(amount)s, %(currency)s, %(gateway)s, %(gateway_reference)s,
        %(error_code)s, %(refund_id)s, %(created_at)s, %(updated_at)s)
RETURNING transaction_id
"""
INSERT_REFUND = """
INSERT INTO payment_refunds (payment_id, refund_amount, reason, status, gateway, gateway_reference, error_code,
                             created_at, updated_at)
VALUES (%(payment_id)s, %(refund_amount)s, %(reason)s, %(status)s, %(gateway)s, %(gateway_reference)s,
        %(error_code)s, %(created_at)s, %(updated_at)s)
RETURNING refund_id
"""
MOMENT = datetime(2025, 11, 3, 11, 23, 0, 145775, tzinfo=UTC)


def add_transaction(db: psycopg2.extensions.connection, payment_id: int, kind: str, status: str, **fields: Any) -> int:
    """Write one transaction row as the services would; return its id."""
    row = {
        "payment_id": payment_id,
        "kind": kind,
        "status": status,
        "amount": Decimal("31.25"),
        "currency": "INR",
        "gateway": "simulator",
        "gateway_reference": None,
        "error_code": None,
        "refund_id": None,
        "created_at": MOMENT,
        "updated_at": MOMENT,
        **fields,
    }
    with db.cursor() as cur:
        cur.execute(INSERT_TRANSACTION, row)
        return cur.fetchone()[0]


def add_refund(db: psycopg2.extensions.connection, payment_id: int, amount: str, status: str, **fields: Any) -> int:
    """Write one refund record; return its id."""
    row = {
        "payment_id": payment_id,
        "refund_amount": Decimal(amount),
        "reason": None,
        "status": status,
        "gateway": "simulator",
        "gateway_reference": None,
        "error_code": None,
        "created_at": MOMENT,
        "updated_at": MOMENT,
        **fields,
    }
    with db.cursor() as cur:
        cur.execute(INSERT_REFUND, row)
        return cur.fetchone()[0]


def test_transactions_are_listed_oldest_first_with_every_field(
    client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("25.00"), authorized_amount=Decimal("40.00"))
    refund_id = add_refund(db, payment_id, "5.00", "SUCCEEDED", gateway_reference="re_1")
    # Recorded in this order whatever their times say: the order is the order of recording.
    authorize = add_transaction(
        db, payment_id, "AUTHORIZE", "SUCCEEDED", amount=Decimal("40.00"), gateway_reference="sim_a",
        created_at=MOMENT + timedelta(hours=1),
    )  # fmt: skip
    capture = add_transaction(
        db, payment_id, "CAPTURE", "SUCCEEDED", amount=Decimal("25.00"), gateway_reference="sim_a"
    )
    refund = add_transaction(
        db, payment_id, "REFUND", "SUCCEEDED", amount=Decimal("5.00"), refund_id=refund_id, gateway_reference="re_1",
        updated_at=MOMENT + timedelta(seconds=2),
    )  # fmt: skip

    response = client.get(f"/v1/payments/{payment_id}/transactions")

    assert response.status_code == 200
    body = response.get_json()
    assert body["payment_id"] == payment_id
    assert [t["transaction_id"] for t in body["transactions"]] == [authorize, capture, refund]
    assert all(set(t) == TRANSACTION_KEYS for t in body["transactions"])
    assert body["transactions"][2] == {
        "transaction_id": refund,
        "payment_id": payment_id,
        "kind": "REFUND",
        "status": "SUCCEEDED",
        "amount": 5.0,
        "currency": "INR",
        "gateway": "simulator",
        "gateway_reference": "re_1",
        "error_code": None,
        "refund_id": refund_id,
        "created_at": "2025-11-03T11:23:00.145775+00:00",
        "updated_at": "2025-11-03T11:23:02.145775+00:00",
    }
    assert [(t["kind"], t["amount"], t["refund_id"]) for t in body["transactions"][:2]] == [
        ("AUTHORIZE", 40.0, None),
        ("CAPTURE", 25.0, None),
    ]


def test_a_failed_transaction_says_why_and_cash_names_no_gateway(
    client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    failed = insert_payment(status="FAILED")
    add_transaction(db, failed, "PURCHASE", "FAILED", error_code="CARD_DECLINED")
    cash = insert_payment(method="CASH")
    add_transaction(db, cash, "PURCHASE", "SUCCEEDED", gateway=None)

    refused = client.get(f"/v1/payments/{failed}/transactions").get_json()["transactions"]
    paid = client.get(f"/v1/payments/{cash}/transactions").get_json()["transactions"]

    assert [(t["status"], t["error_code"]) for t in refused] == [("FAILED", "CARD_DECLINED")]
    assert [(t["kind"], t["status"], t["gateway"]) for t in paid] == [("PURCHASE", "SUCCEEDED", None)]


@pytest.mark.parametrize(("stored", "shown"), [("1520.00", "1520.0"), ("31.25", "31.25"), ("0.10", "0.1")])
def test_amounts_are_json_numbers_as_on_the_payment(
    client: FlaskClient,
    insert_payment: Callable[..., int],
    db: psycopg2.extensions.connection,
    stored: str,
    shown: str,
) -> None:
    currency = "JPY" if stored == "1520.00" else "INR"
    payment_id = insert_payment(amount=Decimal(stored), currency=currency)
    add_transaction(db, payment_id, "PURCHASE", "SUCCEEDED", amount=Decimal(stored), currency=currency)

    history = client.get(f"/v1/payments/{payment_id}/transactions").get_data(as_text=True)
    payment = client.get(f"/v1/payments/{payment_id}").get_data(as_text=True)

    assert f'"amount":{shown},' in history
    assert f'"amount":{shown},' in payment
    assert f'"currency":"{currency}"' in history


def test_a_payment_without_transactions_has_an_empty_history(
    client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    payment_id = insert_payment()

    response = client.get(f"/v1/payments/{payment_id}/transactions")

    assert response.status_code == 200
    assert response.get_json() == {"payment_id": payment_id, "transactions": []}


@pytest.mark.parametrize("what", ["transactions", "refunds"])
@pytest.mark.parametrize("payment_id", ["999999", "abc", "0", "-1", "9223372036854775808", "1.5"])
def test_an_unknown_payment_is_404_payment_not_found(client: FlaskClient, what: str, payment_id: str) -> None:
    response = client.get(f"/v1/payments/{payment_id}/{what}")

    assert response.status_code == 404
    assert response.get_json()["code"] == "payment_not_found"


def test_other_payments_rows_are_not_listed(
    client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    mine, other = insert_payment(), insert_payment()
    add_transaction(db, other, "PURCHASE", "SUCCEEDED")
    add_refund(db, other, "1.00", "SUCCEEDED")

    assert client.get(f"/v1/payments/{mine}/transactions").get_json()["transactions"] == []
    assert client.get(f"/v1/payments/{mine}/refunds").get_json()["refunds"] == []


def test_refunds_are_listed_oldest_first_in_every_status(
    client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("30.00"), amount_refunded=Decimal("15.00"), status="PARTIALLY_REFUNDED")
    first = add_refund(db, payment_id, "10.00", "SUCCEEDED", reason="detour", gateway_reference="simre_1")
    refused = add_refund(
        db, payment_id, "20.00", "FAILED", error_code="GATEWAY_ERROR", created_at=MOMENT - timedelta(days=1)
    )
    waiting = add_refund(db, payment_id, "5.00", "PENDING", gateway=None)

    response = client.get(f"/v1/payments/{payment_id}/refunds")

    assert response.status_code == 200
    body = response.get_json()
    assert body["payment_id"] == payment_id
    assert [r["refund_id"] for r in body["refunds"]] == [first, refused, waiting]
    assert all(set(r) == REFUND_KEYS for r in body["refunds"])
    assert body["refunds"][0] == {
        "refund_id": first,
        "payment_id": payment_id,
        "refund_amount": 10.0,
        "currency": "INR",
        "refund_status": "SUCCEEDED",
        "reason": "detour",
        "gateway": "simulator",
        "gateway_reference": "simre_1",
        "error_code": None,
        "created_at": "2025-11-03T11:23:00.145775+00:00",
        "updated_at": "2025-11-03T11:23:00.145775+00:00",
    }
    assert [(r["refund_status"], r["error_code"], r["gateway"]) for r in body["refunds"][1:]] == [
        ("FAILED", "GATEWAY_ERROR", "simulator"),
        ("PENDING", None, None),
    ]


def test_a_refund_made_through_the_api_is_listed_as_its_answer_said(
    charge_client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    payment_id = insert_payment(method="CASH", amount=Decimal("40.00"))
    answer = charge_client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 12.5, "reason": "late"})

    listed = charge_client.get(f"/v1/payments/{payment_id}/refunds").get_json()["refunds"]

    assert answer.status_code == 200
    refund = answer.get_json()
    assert len(listed) == 1
    assert {k: listed[0][k] for k in ("refund_id", "refund_amount", "refund_status", "reason", "currency")} == {
        k: refund[k] for k in ("refund_id", "refund_amount", "refund_status", "reason", "currency")
    }
    assert listed[0]["created_at"] == refund["timestamp"]


def test_a_payment_without_refunds_has_an_empty_list(client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    payment_id = insert_payment()

    assert client.get(f"/v1/payments/{payment_id}/refunds").get_json() == {"payment_id": payment_id, "refunds": []}


@pytest.mark.parametrize("what", ["transactions", "refunds"])
def test_the_history_needs_an_api_key_when_keys_are_configured(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int], what: str
) -> None:
    payment_id = insert_payment()
    client = make_app(API_KEYS={"reader": hashlib.sha256(b"reader-key").hexdigest()}).test_client()

    refused = client.get(f"/v1/payments/{payment_id}/{what}")
    wrong = client.get(f"/v1/payments/{payment_id}/{what}", headers={"X-API-Key": "reader-ke"})
    allowed = client.get(f"/v1/payments/{payment_id}/{what}", headers={"Authorization": "Bearer reader-key"})

    assert (refused.status_code, refused.get_json()["code"]) == (401, "unauthorized")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert allowed.status_code == 200


@pytest.mark.parametrize("what", ["transactions", "refunds"])
def test_the_history_counts_against_the_default_rate_limit(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int], what: str
) -> None:
    payment_id = insert_payment()
    client = make_app(RATE_LIMIT_ENABLED=True, RATE_LIMIT_DEFAULT="2 per minute").test_client()

    answers = [client.get(f"/v1/payments/{payment_id}/{what}") for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"] == "2"
    assert answers[2].get_json()["code"] == "rate_limited"
    assert "Retry-After" in answers[2].headers


@pytest.mark.parametrize("what", ["transactions", "refunds"])
def test_the_history_carries_the_request_id(client: FlaskClient, insert_payment: Callable[..., int], what: str) -> None:
    payment_id = insert_payment()

    echoed = client.get(f"/v1/payments/{payment_id}/{what}", headers={"X-Request-ID": "trip-svc.abc-123"})
    missing = client.get(f"/v1/payments/999999/{what}")

    assert echoed.headers["X-Request-ID"] == "trip-svc.abc-123"
    assert len(missing.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize("what", ["transactions", "refunds"])
def test_the_history_is_read_only(client: FlaskClient, insert_payment: Callable[..., int], what: str) -> None:
    payment_id = insert_payment()

    response = client.post(f"/v1/payments/{payment_id}/{what}", json={})

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
