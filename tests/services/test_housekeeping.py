"""Housekeeping against the real database: what is purged, what is kept, and purges side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg2
from flask import Flask

from api.services import services
from services.housekeeping import Housekeeper
from tests.helpers import wait_until


def _keys(db: psycopg2.extensions.connection, expired: int, live: int) -> None:
    """Insert idempotency keys, `expired` of them past their expiry."""
    with db.cursor() as cur:
        for n in range(expired + live):
            cur.execute(
                "INSERT INTO idempotency_keys (scope, key_hash, request_fingerprint, request_path, expires_at)"
                " VALUES ('test', %s, 'f', '/v1/payments/charge', now() + %s * interval '1 hour')",
                (f"{n:064x}", -1 if n < expired else 1),
            )


def _notifications(db: psycopg2.extensions.connection, rows: list[tuple[str, str]]) -> None:
    """Insert outbox rows of (status, age as an interval literal)."""
    with db.cursor() as cur:
        for n, (status, age) in enumerate(rows):
            cur.execute(
                "INSERT INTO notification_outbox (notification_id, event_type, payload, status, updated_at)"
                " VALUES (%s, 'payment', '{}', %s, now() - %s::interval)",
                (f"payment-{n}-success", status, age),
            )


def _count(db: psycopg2.extensions.connection, table: str) -> int:
    with db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return cur.fetchone()[0]


def test_a_pass_deletes_every_expired_key_in_batches_and_keeps_live_ones(
    make_app: Callable[..., Flask], db: psycopg2.extensions.connection
) -> None:
    app = make_app()
    _keys(db, expired=7, live=3)
    housekeeper = Housekeeper(services(app).pool, services(app).config, batch_size=2)

    assert housekeeper.purge_expired_keys() == 7
    assert _count(db, "idempotency_keys") == 3
    assert housekeeper.purge_expired_keys() == 0


def test_only_notifications_delivered_before_the_retention_are_deleted(
    make_app: Callable[..., Flask], db: psycopg2.extensions.connection
) -> None:
    app = make_app(NOTIFY_RETENTION=86400)
    _notifications(db, [
        ("DELIVERED", "2 days"), ("DELIVERED", "25 hours"), ("DELIVERED", "23 hours"),
        ("PENDING", "30 days"), ("DEAD", "30 days"),
    ])  # fmt: skip

    report = services(app).housekeeper.run_once()

    assert (report.idempotency_keys, report.notifications) == (0, 2)
    with db.cursor() as cur:
        cur.execute("SELECT status, updated_at < now() - interval '1 day' FROM notification_outbox ORDER BY 1")
        assert cur.fetchall() == [("DEAD", True), ("DELIVERED", False), ("PENDING", True)]


def test_purges_running_side_by_side_delete_each_row_once(
    make_app: Callable[..., Flask], db: psycopg2.extensions.connection
) -> None:
    app = make_app()
    for round_ in range(5):
        _keys(db, expired=300, live=0)
        results: list[int] = []
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_purge_into, args=(app, results, errors)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == [], f"round {round_}"
        # SKIP LOCKED: a purge that stopped on a short batch may leave rows another was deleting,
        # never delete one twice; whatever remains, the next pass takes.
        assert sum(results) + services(app).housekeeper.purge_expired_keys() == 300, f"round {round_}"
        assert _count(db, "idempotency_keys") == 0


def _purge_into(app: Flask, results: list[int], errors: list[BaseException]) -> None:
    """One purge pass of its own, its count (or its error) appended."""
    try:
        housekeeper = Housekeeper(services(app).pool, services(app).config, batch_size=7)
        results.append(housekeeper.purge_expired_keys())
    except BaseException as exc:
        errors.append(exc)


def test_the_background_loop_purges_without_being_asked(
    make_app: Callable[..., Flask], db: psycopg2.extensions.connection
) -> None:
    _keys(db, expired=5, live=1)
    _notifications(db, [("DELIVERED", "8 days"), ("DELIVERED", "1 hour")])
    app = make_app(HOUSEKEEPING_INTERVAL=0.2)
    services(app).housekeeper.start()
    try:
        assert wait_until(
            lambda: (_count(db, "idempotency_keys"), _count(db, "notification_outbox")) == (1, 1), timeout=10
        )
    finally:
        services(app).housekeeper.stop()
