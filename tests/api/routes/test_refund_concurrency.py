"""Refunds and receipts under real concurrency against gunicorn with two workers."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg2
import requests


def fire_together(count: int, send: Callable[[requests.Session], requests.Response]) -> list[requests.Response]:
    """Run `send` `count` times at once (released by a barrier)."""
    barrier = threading.Barrier(count)

    def one(_: int) -> requests.Response:
        with requests.Session() as session:
            barrier.wait()
            return send(session)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def stored(db: psycopg2.extensions.connection, payment_id: int) -> tuple[Decimal, str, Decimal]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT p.amount_refunded, p.status, coalesce(sum(r.refund_amount), 0)"
            " FROM payments p LEFT JOIN payment_refunds r USING (payment_id)"
            " WHERE p.payment_id = %s GROUP BY p.payment_id",
            (payment_id,),
        )
        return cur.fetchone()


def test_twenty_parallel_refunds_of_six_on_a_hundred_never_over_refund(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("100.00"))
    url = serve_gunicorn()
    endpoint = f"{url}/v1/payments/{payment_id}/refund"

    responses = fire_together(20, lambda s: s.post(endpoint, json={"amount": 6}, timeout=30))

    assert Counter(r.status_code for r in responses) == {200: 16, 400: 4}
    assert {r.json()["code"] for r in responses if r.status_code == 400} == {"refund_exceeds_remaining"}
    assert stored(db, payment_id) == (Decimal("96.00"), "PARTIALLY_REFUNDED", Decimal("96.00"))

    rest = requests.post(endpoint, timeout=10)
    assert (rest.status_code, rest.json()["refund_amount"], rest.json()["status"]) == (200, 4.0, "REFUNDED")
    assert stored(db, payment_id) == (Decimal("100.00"), "REFUNDED", Decimal("100.00"))

    more = requests.post(endpoint, json={"amount": 1}, timeout=10)
    assert (more.status_code, more.json()["code"]) == (400, "payment_not_refundable")


def test_two_parallel_refunds_of_sixty_percent_let_exactly_one_through(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("50.00"))
    url = serve_gunicorn()
    endpoint = f"{url}/v1/payments/{payment_id}/refund"

    responses = fire_together(2, lambda s: s.post(endpoint, json={"amount": 30}, timeout=30))

    assert sorted(r.status_code for r in responses) == [200, 400]
    assert stored(db, payment_id) == (Decimal("30.00"), "PARTIALLY_REFUNDED", Decimal("30.00"))


def test_parallel_refunds_with_one_key_refund_once(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("50.00"))
    url = serve_gunicorn()
    endpoint = f"{url}/v1/payments/{payment_id}/refund"
    body = {"amount": 10, "idempotency_key": "one-refund"}

    responses = fire_together(20, lambda s: s.post(endpoint, json=body, timeout=30))

    assert {r.status_code for r in responses} <= {200, 409}
    assert len({r.content for r in responses if r.status_code == 200}) == 1
    assert stored(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED", Decimal("10.00"))


def test_twenty_parallel_first_receipts_make_one_receipt(
    serve_gunicorn: Callable[..., str], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("31.25"))
    url = serve_gunicorn()

    responses = fire_together(20, lambda s: s.get(f"{url}/v1/payments/{payment_id}/receipt", timeout=30))

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["receipt_number"] for r in responses}) == 1
    assert len({r.json()["receipt_id"] for r in responses}) == 1
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payment_receipts WHERE payment_id = %s", (payment_id,))
        assert cur.fetchone()[0] == 1
