"""Reconciliation: PENDING payments settle against the gateway, once each, however many reconcilers run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg2
from flask import Flask

from api.services import services
from services.container import build_services, close_services
from services.gateways import GatewayUnavailableError
from tests.fakes import FakeTripService
from tests.gateways import CountingGateway, StubGateway, use_gateway
from tests.helpers import wait_until

PENDING_APP = {
    "GATEWAY_SUCCESS_RATE": 1.0,
    "GATEWAY_PENDING_RATE": 1.0,
    "GATEWAY_SETTLE_SECONDS": 0.0,
    "NOTIFY_DISPATCHER_ENABLED": False,
    "RATE_LIMIT_ENABLED": False,
}


def charge_trips(app: Flask, trips: FakeTripService, count: int, method: str = "CARD") -> list[dict[str, Any]]:
    client = app.test_client()
    answers = []
    for trip_id in range(1, count + 1):
        trips.trip(trip_id)
        response = client.post(
            "/v1/payments/charge", json={"idempotency_key": f"k-{trip_id}", "trip_id": trip_id, "method": method}
        )
        answers.append({"status_code": response.status_code, **response.get_json()})
    return answers


def statuses(db: psycopg2.extensions.connection) -> dict[str, int]:
    with db.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM payments GROUP BY status")
        return dict(cur.fetchall())


def settlement_notifications(db: psycopg2.extensions.connection) -> list[tuple[int, int]]:
    """Per payment: how many notifications announce its settled state (not the PENDING answer)."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT (payload->>'payment_id')::bigint, count(*) FROM notification_outbox"
            " WHERE event_type = 'payment' AND payload->>'status' <> 'PENDING' GROUP BY 1 ORDER BY 1"
        )
        return cur.fetchall()


def test_a_hundred_pending_charges_are_settled_by_the_background_loop_with_one_notification_each(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=1.0, RECONCILE_MIN_AGE=1.0, **PENDING_APP)

    answers = charge_trips(app, trips, 100)

    assert {(a["status_code"], a["status"]) for a in answers} == {(202, "PENDING")}
    assert wait_until(lambda: statuses(db) == {"SUCCESS": 100}, timeout=15)
    assert settlement_notifications(db) == [(a["payment_id"], 1) for a in answers]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM simulator_transactions WHERE status = 'SUCCEEDED'")
        assert cur.fetchone()[0] == 100


def test_many_reconcilers_on_one_database_settle_every_payment_once(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    charge_trips(app, trips, 60)
    config = services(app).config.with_overrides({"RECONCILE_BATCH_SIZE": 5})
    graphs = [build_services(config) for _ in range(4)]  # as four instances would: own pools, own gateways
    counted = [CountingGateway(graph.gateways.default) for graph in graphs]
    for graph, gateway in zip(graphs, counted, strict=True):
        graph.gateways.install(gateway)
    reports: list[Any] = []
    start = threading.Barrier(len(graphs))

    def reconcile(graph: Any) -> None:
        start.wait()
        reports.append(graph.reconciler.run_once())

    threads = [threading.Thread(target=reconcile, args=(graph,)) for graph in graphs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for graph in graphs:
        close_services(graph)

    settled = [d.row_id for report in reports for d in report.decisions if d.status]
    assert sorted(settled) == list(range(1, 61))
    assert statuses(db) == {"SUCCESS": 60}
    assert [count for _, count in settlement_notifications(db)] == [1] * 60
    assert sum(gateway.calls for gateway in counted) == 0  # nothing was sent again: the gateway had them all


def test_a_payment_still_undecided_is_looked_at_again_later_with_a_growing_back_off(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0,
        **{**PENDING_APP, "GATEWAY_SETTLE_SECONDS": 3600.0},
    )  # fmt: skip
    charge_trips(app, trips, 1)
    reconciler = services(app).reconciler

    first = reconciler.run_once()
    second = reconciler.run_once()
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET reconcile_after = now()")  # time passes
    third = reconciler.run_once()

    assert [d.result for d in first.decisions] == ["pending"]
    assert second.decisions == []  # not due again yet
    assert [d.result for d in third.decisions] == ["pending"]
    with db.cursor() as cur:
        cur.execute("SELECT status, reconcile_attempts, reconcile_after - now() > interval '100 seconds' FROM payments")
        assert cur.fetchone() == ("PENDING", 2, True)


def test_the_back_off_is_capped_at_an_hour(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0,
        **{**PENDING_APP, "GATEWAY_SETTLE_SECONDS": 86400.0},
    )  # fmt: skip
    charge_trips(app, trips, 1)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET reconcile_attempts = 1000")

    services(app).reconciler.run_once()

    with db.cursor() as cur:
        cur.execute("SELECT reconcile_after - now() <= interval '3600 seconds' FROM payments")
        assert cur.fetchone() == (True,)


def test_a_payment_the_gateway_never_received_is_sent_again_under_the_same_key_and_settles(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    class Unreachable(StubGateway):
        def authorize(self, charge: Any) -> Any:
            raise GatewayUnavailableError("connection refused")

    app = make_app(
        TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0,
        **{**PENDING_APP, "GATEWAY_PENDING_RATE": 0.0},
    )  # fmt: skip
    real = services(app).gateways.default
    use_gateway(app, Unreachable())
    [answer] = charge_trips(app, trips, 1)
    gateway = use_gateway(app, CountingGateway(real))

    report = services(app).reconciler.run_once()

    assert answer["status"] == "PENDING"
    assert [(d.result, d.status) for d in report.decisions] == [("succeeded", "SUCCESS")]
    assert gateway.calls == 1
    assert statuses(db) == {"SUCCESS": 1}


def test_a_payment_unknown_to_the_gateway_fails_with_gateway_no_record_once_old_and_frees_its_trip(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    [answer] = charge_trips(app, trips, 1)
    with db.cursor() as cur:  # the gateway lost it, long ago
        cur.execute("DELETE FROM simulator_transactions")
        cur.execute("UPDATE payments SET created_at = now() - interval '1 hour'")

    report = services(app).reconciler.run_once()
    retry = app.test_client().post(
        "/v1/payments/charge", json={"idempotency_key": "new", "trip_id": 1, "method": "CASH"}
    )

    assert [(d.result, d.status, d.error_code) for d in report.decisions] == [
        ("no_record", "FAILED", "GATEWAY_NO_RECORD")
    ]
    failed = app.test_client().get(f"/v1/payments/{answer['payment_id']}").get_json()
    assert (failed["status"], failed["error_code"]) == ("FAILED", "GATEWAY_NO_RECORD")
    assert retry.status_code == 201


def test_a_gateway_that_does_not_answer_is_asked_once_per_pass_and_leaves_payments_pending(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    class Down(StubGateway):
        asked = 0

        def retrieve(self, charge: Any) -> Any:
            Down.asked += 1
            raise GatewayUnavailableError("timed out")

    app = make_app(TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    charge_trips(app, trips, 3)
    use_gateway(app, Down())

    report = services(app).reconciler.run_once()

    assert [d.result for d in report.decisions] == ["unavailable"] * 3
    assert Down.asked == 1  # the rest of the pass did not wait out a timeout per row
    assert statuses(db) == {"PENDING": 3}
    with db.cursor() as cur:  # an outage says nothing about a row: its back-off does not grow
        cur.execute("SELECT reconcile_attempts FROM payments")
        assert cur.fetchall() == [(0,), (0,), (0,)]


def test_a_row_that_cannot_be_decided_is_looked_at_later_and_the_pass_goes_on(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    class Broken(StubGateway):
        def retrieve(self, charge: Any) -> Any:
            if charge.payment_id == 1:
                raise RuntimeError("unexpected answer")
            return super().retrieve(charge)

    app = make_app(TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    charge_trips(app, trips, 2)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET created_at = now() - interval '1 hour'")
    use_gateway(app, Broken())

    report = services(app).reconciler.run_once()

    assert [(d.row_id, d.result) for d in report.decisions] == [(1, "error"), (2, "no_record")]
    assert statuses(db) == {"PENDING": 1, "FAILED": 1}


def test_a_resend_that_does_not_reach_the_gateway_is_counted_unavailable_not_resent(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    class Unreachable(StubGateway):
        def authorize(self, charge: Any) -> Any:
            raise GatewayUnavailableError("connection refused")

    app = make_app(
        TRIP_SERVICE_URL=trips.url, RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0,
        **{**PENDING_APP, "GATEWAY_PENDING_RATE": 0.0},
    )  # fmt: skip
    use_gateway(app, Unreachable())
    charge_trips(app, trips, 2)

    report = services(app).reconciler.run_once()

    assert [d.result for d in report.decisions] == ["unavailable", "unavailable"]
    assert statuses(db) == {"PENDING": 2}


def test_a_young_pending_payment_from_before_the_gateways_is_left_unknown_and_never_sent(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    app = make_app(RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    with db.cursor() as cur:
        cur.execute("SELECT now()")
        [now] = cur.fetchone()
    old_version = insert_payment(status="PENDING", created_at=now)  # gateway NULL, as before migration 0008

    report = services(app).reconciler.run_once()

    assert [(d.row_id, d.result, d.status) for d in report.decisions] == [(old_version, "unknown", None)]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM simulator_transactions")
        assert cur.fetchone()[0] == 0


def test_a_payment_and_refund_of_a_gateway_not_configured_are_passed_over_saying_why_without_counting_an_attempt(
    make_app: Callable[..., Flask], insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    app = make_app(RECONCILE_INTERVAL=0, RECONCILE_MIN_AGE=0, **PENDING_APP)
    on_stripe = insert_payment(status="PENDING")
    refunded = insert_payment(status="SUCCESS", trip_id=202)
    with db.cursor() as cur:
        cur.execute("UPDATE payments SET gateway = 'stripe', gateway_reference = 'pi_' || payment_id")
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, refund_amount, status, gateway)"
            " VALUES (%s, 1, 'PENDING', 'stripe')",
            (refunded,),
        )

    for _ in range(2):
        report = services(app).reconciler.run_once()
        assert {d.result for d in report.decisions} == {"gateway_not_configured"}
        assert all("The stripe gateway is not configured" in d.describe() for d in report.decisions)
        with db.cursor() as cur:
            cur.execute("UPDATE payments SET reconcile_after = NULL; UPDATE payment_refunds SET reconcile_after = NULL")
    with db.cursor() as cur:
        cur.execute("SELECT reconcile_attempts FROM payments WHERE payment_id = %s", (on_stripe,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT reconcile_attempts FROM payment_refunds")
        assert cur.fetchone()[0] == 0
