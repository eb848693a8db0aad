"""POST /v1/payments/<id>/refund: partial and full refunds, never more than was paid."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal

import psycopg2
import pytest
from flask.testing import FlaskClient

from config import Config
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from tests.fakes import FakeNotificationService
from tests.helpers import row_counts

REFUND_KEYS = {
    "refund_id", "payment_id", "refund_amount", "refund_status", "amount_refunded", "remaining_amount", "status",
    "reason", "currency", "timestamp",
}  # fmt: skip


def refund(client: FlaskClient, payment_id: int | str, headers: dict | None = None, **body: object):
    return client.post(f"/v1/payments/{payment_id}/refund", json=body, headers=headers or {})


def stored_payment(db: psycopg2.extensions.connection, payment_id: int) -> tuple[Decimal, str]:
    with db.cursor() as cur:
        cur.execute("SELECT amount_refunded, status FROM payments WHERE payment_id = %s", (payment_id,))
        return cur.fetchone()


def test_partial_refunds_add_up_until_the_payment_is_fully_refunded(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("100.00"))

    first = refund(charge_client, payment_id, amount=30, reason="late driver")
    second = refund(charge_client, payment_id, amount=20.5)
    rest = refund(charge_client, payment_id)

    assert first.status_code == 200
    body = first.get_json()
    assert set(body) == REFUND_KEYS
    assert (body["refund_amount"], body["amount_refunded"], body["remaining_amount"]) == (30.0, 30.0, 70.0)
    assert (body["status"], body["reason"], body["payment_id"]) == ("PARTIALLY_REFUNDED", "late driver", payment_id)
    assert second.get_json()["remaining_amount"] == 49.5
    assert (rest.get_json()["refund_amount"], rest.get_json()["status"]) == (49.5, "REFUNDED")
    assert rest.get_json()["remaining_amount"] == 0.0
    assert stored_payment(db, payment_id) == (Decimal("100.00"), "REFUNDED")
    assert row_counts(db)["payment_refunds"] == 3


def test_an_empty_body_refunds_everything(charge_client: FlaskClient, insert_payment: Callable[..., int]) -> None:
    payment_id = insert_payment(amount=Decimal("31.25"))

    response = charge_client.post(f"/v1/payments/{payment_id}/refund")

    assert response.status_code == 200
    assert (response.get_json()["refund_amount"], response.get_json()["status"]) == (31.25, "REFUNDED")


def test_a_refund_over_what_remains_is_400_and_writes_nothing(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("10.00"))
    refund(charge_client, payment_id, amount=7)

    response = refund(charge_client, payment_id, amount=3.01)

    assert response.status_code == 400
    body = response.get_json()
    assert (body["code"], body["remaining_amount"], body["requested_amount"]) == ("refund_exceeds_remaining", 3.0, 3.01)
    assert (
        body["error"] == f"A refund of 3.01 INR exceeds the 3.00 INR that remains refundable on payment {payment_id}."
    )
    assert stored_payment(db, payment_id) == (Decimal("7.00"), "PARTIALLY_REFUNDED")
    assert row_counts(db)["payment_refunds"] == 1


def test_a_refund_over_what_remains_of_a_yen_payment_says_so_in_whole_yen(
    charge_client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    payment_id = insert_payment(amount=Decimal("1520.00"), currency="JPY")
    refund(charge_client, payment_id, amount=1519)

    body = refund(charge_client, payment_id, amount=1519).get_json()

    assert body["error"] == f"A refund of 1519 JPY exceeds the 1 JPY that remains refundable on payment {payment_id}."


@pytest.mark.parametrize("status", ["FAILED", "PENDING", "REFUNDED"])
def test_payments_that_are_not_paid_cannot_be_refunded(
    charge_client: FlaskClient,
    insert_payment: Callable[..., int],
    db: psycopg2.extensions.connection,
    status: str,
) -> None:
    refunded = Decimal("31.25") if status == "REFUNDED" else Decimal("0")
    payment_id = insert_payment(status=status, amount_refunded=refunded)

    response = refund(charge_client, payment_id, amount=1)

    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["payment_status"]) == ("payment_not_refundable", status)
    assert row_counts(db)["payment_refunds"] == 0


@pytest.mark.parametrize("payment_id", ["999999", "abc", "0", "-1"])
def test_refunding_an_unknown_payment_is_404(charge_client: FlaskClient, payment_id: str) -> None:
    response = refund(charge_client, payment_id, amount=1)

    assert (response.status_code, response.get_json()["code"]) == (404, "payment_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": 1.001}, "amount"),
        ({"amount": "5.00"}, "amount"),
        ({"amount": True}, "amount"),
        ({"reason": 42}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "nul \u0000 byte"}, "reason"),
        ({"reason": "lone \ud800 surrogate"}, "reason"),
        ({"amount": None}, "amount"),
        ({"amount": 1, "ammount": 2}, "ammount"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_bad_refund_body_returns_400_naming_the_field_and_writes_nothing(
    charge_client: FlaskClient,
    insert_payment: Callable[..., int],
    db: psycopg2.extensions.connection,
    body: dict,
    field: str,
) -> None:
    payment_id = insert_payment()

    response = refund(charge_client, payment_id, **body)

    assert response.status_code == 400
    assert (response.get_json()["code"], response.get_json()["field"]) == ("validation_error", field)
    assert stored_payment(db, payment_id) == (Decimal("0.00"), "SUCCESS")
    assert row_counts(db)["payment_refunds"] == row_counts(db)["idempotency_keys"] == 0


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [("[]", "application/json", 400), ("nope", "application/json", 400), ("amount=5", "text/plain", 415)],
)
def test_unreadable_refund_bodies_are_4xx(
    charge_client: FlaskClient, insert_payment: Callable[..., int], data: str, content_type: str, status: int
) -> None:
    payment_id = insert_payment()

    response = charge_client.post(f"/v1/payments/{payment_id}/refund", data=data, content_type=content_type)

    assert response.status_code == status


def test_a_reason_of_exactly_500_characters_is_kept(
    charge_client: FlaskClient, insert_payment: Callable[..., int]
) -> None:
    payment_id = insert_payment()

    response = refund(charge_client, payment_id, amount=1, reason="r" * 500)

    assert response.get_json()["reason"] == "r" * 500


def test_a_repeated_refund_with_the_same_key_refunds_once_and_replays(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("50.00"))

    first = refund(charge_client, payment_id, amount=10, idempotency_key="refund-once")
    again = refund(charge_client, payment_id, headers={"Idempotency-Key": "refund-once"}, amount=10)

    assert first.status_code == again.status_code == 200
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(db)["payment_refunds"] == 1
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")


def test_a_refund_key_reused_with_another_amount_is_422(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("50.00"))
    refund(charge_client, payment_id, amount=10, idempotency_key="k")

    response = refund(charge_client, payment_id, amount=11, idempotency_key="k")

    assert (response.status_code, response.get_json()["code"]) == (422, "idempotency_key_reused")
    assert row_counts(db)["payment_refunds"] == 1


def test_refund_keys_are_scoped_to_the_payment(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    first, second = insert_payment(), insert_payment()

    a = refund(charge_client, first, amount=1, idempotency_key="shared")
    b = refund(charge_client, second, amount=1, idempotency_key="shared")

    assert (a.status_code, b.status_code) == (200, 200)
    assert "Idempotent-Replayed" not in b.headers
    with db.cursor() as cur:
        cur.execute("SELECT scope FROM idempotency_keys WHERE key_hash = %s ORDER BY scope",
                    (hashlib.sha256(b"shared").hexdigest(),))  # fmt: skip
        assert [row[0] for row in cur.fetchall()] == [f"refund:{first}", f"refund:{second}"]


def test_a_rejected_refund_releases_its_key(
    charge_client: FlaskClient, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("5.00"))

    too_much = refund(charge_client, payment_id, amount=6, idempotency_key="k")
    corrected = refund(charge_client, payment_id, amount=5, idempotency_key="k")

    assert too_much.status_code == 400
    assert row_counts(db)["idempotency_keys"] == 1
    assert corrected.status_code == 200


def test_a_payment_loaded_from_the_seed_csv_refunds_like_any_other(
    charge_client: FlaskClient, test_config: Config, db: psycopg2.extensions.connection
) -> None:
    conn = psycopg2.connect(test_config.get_database_uri())
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()
    with db.cursor() as cur:
        cur.execute("SELECT payment_id, amount FROM payments WHERE status = 'SUCCESS' ORDER BY payment_id LIMIT 1")
        payment_id, amount = cur.fetchone()

    partial = refund(charge_client, payment_id, amount=1)
    rest = refund(charge_client, payment_id)

    assert partial.get_json()["status"] == "PARTIALLY_REFUNDED"
    assert Decimal(str(rest.get_json()["refund_amount"])) == amount - 1
    assert rest.get_json()["status"] == "REFUNDED"


def test_the_rider_is_notified_of_a_refund(
    charge_client: FlaskClient, insert_payment: Callable[..., int], notifications: FakeNotificationService
) -> None:
    payment_id = insert_payment(rider_id=7, amount=Decimal("20.00"))

    body = refund(charge_client, payment_id, amount=5).get_json()

    (note,) = notifications.wait_for(1)
    assert (note["type"], note["payment_id"], note["refund_id"], note["amount"]) == (
        "refund", payment_id, body["refund_id"], 5.0,
    )  # fmt: skip
    assert notifications.keys == [note["notification_id"]]
