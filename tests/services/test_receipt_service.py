"""ReceiptService against the real database: simultaneous first receipts of one payment."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
from flask import Flask

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
    service = app.extensions["receipt_service"]
    for _ in range(ROUNDS):
        payment_id = insert_payment()
        receipts = all_at_once([lambda p=payment_id: service.get_receipt(p)] * PARALLEL)
        assert len({r["receipt_number"] for r in receipts}) == 1
        assert len({r["receipt_id"] for r in receipts}) == 1

    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT payment_id) FROM payment_receipts")
        assert cur.fetchone() == (ROUNDS, ROUNDS)
