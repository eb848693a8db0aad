"""First receipts under real concurrency: many parallel requests for fresh payments against gunicorn."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg2
import requests

from tests.helpers import all_at_once

ROUNDS = 20
PARALLEL = 20


def get_receipt(url: str, payment_id: int) -> Callable[[], requests.Response]:
    """A call that fetches one payment's receipt over its own connection."""

    def call() -> requests.Response:
        with requests.Session() as session:
            session.trust_env = False
            return session.get(f"{url}/v1/payments/{payment_id}/receipt", timeout=30)

    return call


def test_parallel_first_receipts_all_succeed_with_one_receipt_number_per_payment(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    # Two constraints can be hit by simultaneous first inserts (payment_id and receipt_number); one
    # round rarely shows the loser of a race, so run enough rounds to catch it.
    url = serve_gunicorn()
    statuses: Counter[int] = Counter()
    numbers_per_payment: dict[int, set[str]] = {}
    for _ in range(ROUNDS):
        payment_id = insert_payment()
        responses = all_at_once([get_receipt(url, payment_id)] * PARALLEL)
        statuses.update(r.status_code for r in responses)
        numbers_per_payment[payment_id] = {r.json().get("receipt_number") for r in responses}

    assert statuses == {200: ROUNDS * PARALLEL}, statuses
    assert all(len(numbers) == 1 for numbers in numbers_per_payment.values()), numbers_per_payment
    with db.cursor() as cur:
        cur.execute("SELECT payment_id, count(*) FROM payment_receipts GROUP BY payment_id")
        assert dict(cur.fetchall()) == dict.fromkeys(numbers_per_payment, 1)
