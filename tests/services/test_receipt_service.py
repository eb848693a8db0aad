"""ReceiptService against the real database: simultaneous first receipts of one payment."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2
from flask import Flask

from api.services import services
from services.payments.requests import RefundRequest
from tests.helpers import all_at_once

ROUNDS = 50
PARALLEL = 20


def test_simultaneous_first_receipts_of_a_payment_store_one_and_all_get_it(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    # Released together right at the service, so their INSERTs really overlap: the receipt row has
    # two unique constraints (payment_id and receipt_number) and a loser may hit either. Over HTTP
    # the requests spread out and a round rarely shows the race, so rounds are many here.
    app = make_app(DB_POOL_SIZE=PARALLEL)
    service = services(app).receipts
    for _ in range(ROUNDS):
        payment_id = insert_payment()
        receipts = all_at_once([lambda p=payment_id: service.get_receipt(p).receipt] * PARALLEL)
        assert len({r.receipt_number for r in receipts}) == 1
        assert len({r.receipt_id for r in receipts}) == 1

    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT payment_id) FROM payment_receipts")
        assert cur.fetchone() == (ROUNDS, ROUNDS)


def test_receipts_read_while_refunds_land_agree_with_themselves(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int]
) -> None:
    # A receipt lists the refunds and totals of one moment: the refunds it lists add up to the
    # payment's amount_refunded it shows, whatever commits in between its reads.
    app = make_app(DB_POOL_SIZE=PARALLEL)
    receipts = services(app).receipts
    refunds = services(app).refunds
    for _ in range(ROUNDS // 2):
        payment_id = insert_payment(amount=Decimal("5.00"))
        receipts.get_receipt(payment_id)  # the receipt exists; what follows only reads it
        calls: list[Callable[[], Any]] = []
        for _ in range(PARALLEL // 2):
            calls.append(lambda p=payment_id: refunds.refund(p, RefundRequest(amount=Decimal("0.25")), "refund"))
            calls.append(lambda p=payment_id: receipts.get_receipt(p).to_json())
        results = all_at_once(calls)

        for receipt in (r for r in results if isinstance(r, dict) and "receipt_data" in r):
            data = receipt["receipt_data"]
            listed = sum((r["refund_amount"] for r in data["refunds"]), Decimal(0))
            assert listed == data["totals"]["refunded"] == data["payment"]["amount_refunded"], data
