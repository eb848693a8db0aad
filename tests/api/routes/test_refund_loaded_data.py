"""Refunding payments loaded from the seed CSV never gives back more than was paid (issue 16)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal

import psycopg2
from flask import Flask

from config import Config
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from tests.database.test_seed import LEDGER_VIOLATIONS
from tests.fakes import FakeNotificationService, FakeTripService

REFUND_SUMS = """
SELECT p.payment_id, p.amount, COALESCE(sum(r.refund_amount), 0)
FROM payments AS p
LEFT JOIN payment_refunds AS r ON r.payment_id = p.payment_id
GROUP BY p.payment_id
ORDER BY p.payment_id
"""


def refunded_before(path: str) -> dict[int, Decimal]:
    """What the file says each payment had already given back before the load."""
    before: dict[int, Decimal] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            amount = Decimal(row["amount"])
            if row["status"] == "REFUNDED":
                before[int(row["payment_id"])] = amount
            elif row["status"] == "PARTIALLY_REFUNDED":
                # A partly refunded payment gave back at least a cent, even in a file that does not say how much.
                given = row.get("amount_refunded") or ""
                before[int(row["payment_id"])] = Decimal(given) if given else Decimal("0.01")
    return before


def test_refunding_what_is_left_of_every_loaded_payment_never_refunds_more_than_was_paid(
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    test_config: Config,
    db: psycopg2.extensions.connection,
) -> None:
    conn = psycopg2.connect(test_config.get_database_uri(), options="-c timezone=UTC")
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()
    client = make_app(
        TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url, RATE_LIMIT_ENABLED=False
    ).test_client()
    returned = refunded_before(str(DEFAULT_CSV))
    with db.cursor() as cur:
        cur.execute("SELECT payment_id FROM payments WHERE status IN ('SUCCESS', 'PARTIALLY_REFUNDED')")
        refundable = sorted(row[0] for row in cur.fetchall())
        cur.execute("SELECT payment_id, amount FROM payments")
        amounts = dict(cur.fetchall())

    for payment_id in refundable:
        response = client.post(f"/v1/payments/{payment_id}/refund")
        assert response.status_code == 200, response.get_json()
        returned[payment_id] = returned.get(payment_id, Decimal("0")) + Decimal(
            str(response.get_json()["refund_amount"])
        )

    for payment_id, total in sorted(returned.items()):
        assert total <= amounts[payment_id], (
            f"refunds of payment {payment_id} sum to {total} > amount {amounts[payment_id]}"
        )
    with db.cursor() as cur:
        cur.execute(LEDGER_VIOLATIONS)
        assert cur.fetchall() == []
        cur.execute(REFUND_SUMS)
        recorded = {payment_id: (amount, refunds) for payment_id, amount, refunds in cur.fetchall()}
    assert {p: refunds for p, (amount, refunds) in recorded.items() if refunds} == {p: recorded[p][0] for p in returned}
