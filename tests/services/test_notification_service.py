"""The outbox and its dispatcher against the real database and a real HTTP notification fake."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from flask import Flask
from prometheus_client import REGISTRY

from api.services import services
from app import close_app, create_app
from config import Config
from database.pool import ConnectionPool
from services.metrics_service import MetricsService
from services.notification_service import Dispatcher, NotificationAdmin, RetryPolicy
from tests.fakes import FakeNotificationService, FakeTripService
from tests.helpers import closed_port, config_for_database, create_database, database_env, drop_database, wait_until

ROOT = Path(__file__).resolve().parents[2]


def outbox_rows(db: psycopg2.extensions.connection) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT notification_id, event_type, status, attempts FROM notification_outbox ORDER BY 1")
        return cur.fetchall()


def test_a_charge_refund_and_receipt_each_write_their_notification_with_them(
    quiet_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    trips.trip(101)
    client = quiet_app.test_client()
    paid = client.post("/v1/payments/charge", json={"idempotency_key": "o", "trip_id": 101, "method": "UPI"}).get_json()
    refund = client.post(f"/v1/payments/{paid['payment_id']}/refund", json={"amount": 1}).get_json()
    receipt = client.get(f"/v1/payments/{paid['payment_id']}/receipt").get_json()

    assert outbox_rows(db) == [
        (f"payment-{paid['payment_id']}-success", "payment", "PENDING", 0),
        (f"receipt-{receipt['receipt_id']}", "receipt", "PENDING", 0),
        (f"refund-{refund['refund_id']}-succeeded", "refund", "PENDING", 0),
    ]
    with db.cursor() as cur:
        cur.execute("SELECT payload FROM notification_outbox WHERE event_type = 'payment'")
        payload = cur.fetchone()[0]
    assert {"notification_id", "type", "payment_id", "trip_id", "rider_id", "driver_id", "status", "amount",
            "currency", "timestamp"} <= set(payload)  # fmt: skip


def test_rejected_requests_queue_no_notification(
    quiet_app: Flask, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("5.00"))
    client = quiet_app.test_client()

    client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 6})
    client.post("/v1/payments/charge", json={"idempotency_key": "x", "trip_id": 999, "method": "CARD"})

    assert outbox_rows(db) == []


def test_the_dispatcher_delivers_with_the_id_as_idempotency_key(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    quiet_app.test_client().post("/v1/payments/charge", json={"idempotency_key": "o", "trip_id": 101, "method": "CARD"})

    attempted = dispatcher_for(notifications.url).run_once()

    assert attempted == 1
    (note,) = notifications.received
    assert notifications.keys == [note["notification_id"]]
    assert outbox_rows(db)[0][2:] == ("DELIVERED", 1)


def test_a_failed_delivery_is_retried_later_and_then_marked_dead(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    quiet_app.test_client().post("/v1/payments/charge", json={"idempotency_key": "o", "trip_id": 101, "method": "CARD"})
    notifications.fail_with = 503
    dispatcher = dispatcher_for(notifications.url, NOTIFY_MAX_ATTEMPTS=3, NOTIFY_BACKOFF_BASE=60.0)

    dispatcher.run_once()
    with db.cursor() as cur:
        cur.execute("SELECT status, attempts, last_error, next_attempt_at > now() + interval '20 seconds'"
                    " FROM notification_outbox")  # fmt: skip
        assert cur.fetchone() == ("PENDING", 1, "HTTP 503", True)
    assert dispatcher.run_once() == 0  # not due yet: the backoff holds it back

    for _ in range(2):
        with db.cursor() as cur:
            cur.execute("UPDATE notification_outbox SET next_attempt_at = now()")
        dispatcher.run_once()

    assert outbox_rows(db)[0][2:] == ("DEAD", 3)
    (dead,) = NotificationAdmin(dispatcher.pool).dead()
    assert (dead["attempts"], dead["last_error"]) == (3, "HTTP 503")


def test_requeued_dead_notifications_are_delivered(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    quiet_app.test_client().post("/v1/payments/charge", json={"idempotency_key": "o", "trip_id": 101, "method": "CARD"})
    notifications.fail_with = 500
    dispatcher = dispatcher_for(notifications.url, NOTIFY_MAX_ATTEMPTS=1)
    dispatcher.run_once()
    admin = NotificationAdmin(dispatcher.pool)
    assert MetricsService(dispatcher.pool, "INR").outbox_counts() == {"PENDING": 0, "DEAD": 1}

    notifications.fail_with = None
    requeued = admin.requeue(None)
    dispatcher.run_once()

    assert len(requeued) == 1
    assert outbox_rows(db)[0][2:] == ("DELIVERED", 1)
    assert len(notifications.received) == 1


def test_parallel_dispatchers_never_send_the_same_row_twice(
    quiet_app: Flask,
    insert_payment: Callable[..., int],
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    db: psycopg2.extensions.connection,
) -> None:
    ids = [insert_payment(amount=Decimal("10.00")) for _ in range(60)]
    client = quiet_app.test_client()
    for payment_id in ids:
        client.post(f"/v1/payments/{payment_id}/refund", json={"amount": 1})
    dispatchers = [dispatcher_for(notifications.url, NOTIFY_BATCH_SIZE=5) for _ in range(4)]
    barrier = threading.Barrier(len(dispatchers))

    def drain(dispatcher: Dispatcher) -> None:
        barrier.wait()
        while dispatcher.run_once():
            pass

    threads = [threading.Thread(target=drain, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    sent = Counter(notifications.keys)
    assert len(sent) == 60
    assert set(sent.values()) == {1}
    assert {row[2] for row in outbox_rows(db)} == {"DELIVERED"}


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=1.0, max_seconds=30.0)
    rng = random.Random(1)

    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (6, 30), (9, 30)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= ceiling * 0.5
        assert max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling * 0.3  # jitter spreads retries out


def test_operator_commands_dispatch_list_and_requeue(
    test_config: Config,
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    db: psycopg2.extensions.connection,
) -> None:
    trips.trip(101)
    quiet_app.test_client().post("/v1/payments/charge", json={"idempotency_key": "o", "trip_id": 101, "method": "CARD"})

    def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env=database_env(test_config, NOTIFICATION_SERVICE_URL=notifications.url, LOG_LEVEL="ERROR", **env),
        )  # fmt: skip

    notifications.fail_with = 503
    failed = manage("dispatch-notifications", "--once", NOTIFY_MAX_ATTEMPTS="1")
    listed = manage("dead-notifications")
    notifications.fail_with = None
    requeued = manage("requeue-notifications", "--all")
    delivered = manage("dispatch-notifications", "--once")

    assert failed.returncode == 0 and "attempted 1" in failed.stdout
    assert "payment-1-success" in listed.stdout and "HTTP 503" in listed.stdout
    assert "re-queued 1" in requeued.stdout
    assert delivered.returncode == 0 and "attempted 1" in delivered.stdout
    assert [n["notification_id"] for n in notifications.received] == ["payment-1-success"]


def test_a_database_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="database.pool")  # so its warnings would show, were they logged
    caplog.set_level(logging.INFO, logger="services.notification_service")  # last: it sets the handler's level
    port = closed_port()
    down = ConnectionPool(f"postgresql://postgres@127.0.0.1:{port}/payments", size=2, wait_timeout=1, connect_timeout=2)
    dispatcher = dispatcher_for(notifications.url, NOTIFY_POLL_INTERVAL=0.02)
    database = dispatcher.pool
    polls: list[int] = []
    run_once = dispatcher.run_once

    def counted() -> int:
        polls.append(1)
        return run_once()

    dispatcher.run_once = counted  # type: ignore[method-assign]

    def outages() -> float:
        return REGISTRY.get_sample_value("notification_dispatcher_database_outages_total") or 0.0

    def logged(level: int) -> list[logging.LogRecord]:
        """What the dispatcher loop and the pool said at this level (not, e.g., the unsigned warning)."""
        return [
            record
            for record in caplog.records
            if record.levelno == level and ("dispatcher" in record.getMessage() or record.name == "database.pool")
        ]

    def polls_later(count: int) -> None:
        seen = len(polls)
        assert wait_until(lambda: len(polls) >= seen + count, timeout=5)

    before = outages()
    dispatcher.pool = down
    dispatcher.start()
    try:
        polls_later(8)
        # One warning for the whole outage (the pool's per-poll "connection failed" is not repeated).
        (began,) = logged(logging.WARNING)
        assert began.name == "services.notification_service"
        assert str(port) in began.reason and "refused" in began.reason.lower()
        assert outages() == before + 1
        assert logged(logging.INFO) == []

        dispatcher.pool = database
        polls_later(5)
        (ended,) = [r for r in logged(logging.INFO) if r.name == "services.notification_service"]
        assert "again" in ended.getMessage() and ended.outage_seconds > 0
        assert len(logged(logging.WARNING)) == 1

        dispatcher.pool = down  # a second outage is a second warning and a second count
        polls_later(5)
        assert len(logged(logging.WARNING)) == 2
        assert outages() == before + 2
    finally:
        dispatcher.stop()
        down.close()


def test_a_notification_service_that_is_down_is_one_warning_and_its_return_one_line_with_the_count(
    quiet_app: Flask,
    trips: FakeTripService,
    notifications: FakeNotificationService,
    dispatcher_for: Callable[..., Dispatcher],
    db: psycopg2.extensions.connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.notification_service")
    client = quiet_app.test_client()
    for trip_id in range(101, 106):
        trips.trip(trip_id)
        client.post(
            "/v1/payments/charge", json={"idempotency_key": f"k{trip_id}", "trip_id": trip_id, "method": "CASH"}
        )
    down = dispatcher_for(f"http://127.0.0.1:{closed_port()}", NOTIFY_BACKOFF_BASE=0.01, NOTIFY_BACKOFF_MAX=0.01)

    for _ in range(3):
        with db.cursor() as cur:
            cur.execute("UPDATE notification_outbox SET next_attempt_at = now()")
        down.run_once()
    up = dispatcher_for(notifications.url)
    up.receiver = down.receiver  # one process, one view of the receiver
    with db.cursor() as cur:
        cur.execute("UPDATE notification_outbox SET next_attempt_at = now()")
    up.run_once()

    said = [(r.levelno, r.getMessage()) for r in caplog.records if "notification" in r.getMessage()]
    assert [level for level, message in said if "service" in message] == [logging.WARNING, logging.INFO]
    (back,) = [r for r in caplog.records if r.getMessage() == "notification service available again"]
    assert back.failed_calls == 15  # five notifications, three passes each
    assert not [message for level, message in said if level >= logging.WARNING and "will retry" in message]


def test_an_unmigrated_database_is_one_warning_naming_the_fix_not_a_traceback_per_poll(
    base_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.notification_service")
    name = create_database(base_config, "payments_unmigrated")
    app = create_app(config=config_for_database(base_config, name).with_overrides({"NOTIFY_POLL_INTERVAL": 0.02}))
    try:
        dispatcher = services(app).dispatcher
        assert wait_until(lambda: dispatcher.schema.down, timeout=5)
        time.sleep(0.5)  # some twenty more polls of the unmigrated database
    finally:
        close_app(app)
        drop_database(base_config, name)

    mine = [r for r in caplog.records if r.name == "services.notification_service" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in mine if "schema" in r.getMessage()] == [
        "database schema unavailable; further failures are counted until it answers again"
    ]
    assert "run python database_setup.py" in next(r.reason for r in mine if "schema" in r.getMessage())
    assert not [r for r in mine if r.levelno >= logging.ERROR]
