"""POST /v1/payments/<id>/refund for payments a gateway took: sent to the simulator, settled, reconciled."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.services import services
from services.gateways import GatewayRefund, GatewayResult, GatewayUnavailableError
from services.gateways.registry import GatewayRegistry
from tests.fakes import FakeNotificationService, FakeProfileService, FakeTripService
from tests.gateways import CountingGateway, StubGateway, simulator, use_gateway
from tests.helpers import all_at_once, row_counts


@pytest.fixture
def reconciling_app(
    make_app: Callable[..., Flask],
    trips: FakeTripService,
    notifications: FakeNotificationService,
    profiles: FakeProfileService,
) -> Flask:
    """Wired like `charge_app`, but reconciliation looks at PENDING rows at once and only when a test asks."""
    return make_app(
        TRIP_SERVICE_URL=trips.url,
        NOTIFICATION_SERVICE_URL=notifications.url,
        RIDER_SERVICE_URL=profiles.url,
        DRIVER_SERVICE_URL=profiles.url,
        GATEWAY_SUCCESS_RATE=1.0,
        HTTP_READ_TIMEOUT=1.0,
        RECONCILE_MIN_AGE=0,
        RECONCILE_INTERVAL=0,
        NOTIFY_DISPATCHER_ENABLED=False,
        RATE_LIMIT_ENABLED=False,
    )


class NoAnswer(StubGateway):
    """The gateway never answers a refund (timeout, dropped connection)."""

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        raise GatewayUnavailableError("timed out")


def paid_by_card(client: FlaskClient, trips: FakeTripService, trip_id: int = 101, method: str = "CARD") -> int:
    """A payment charged through the API (and so through the app's gateway); its id."""
    trips.trip(trip_id)
    response = client.post(
        "/v1/payments/charge", json={"idempotency_key": f"charge-{trip_id}", "trip_id": trip_id, "method": method}
    )
    assert (response.status_code, response.get_json()["status"]) == (201, "SUCCESS")
    return response.get_json()["payment_id"]


def refund(client: FlaskClient, payment_id: int, key: str | None = None, **body: object) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/v1/payments/{payment_id}/refund", json=body, headers=headers)


def stored_payment(db: psycopg2.extensions.connection, payment_id: int) -> tuple[Decimal, str]:
    with db.cursor() as cur:
        cur.execute("SELECT amount_refunded, status FROM payments WHERE payment_id = %s", (payment_id,))
        return cur.fetchone()


def refund_records(db: psycopg2.extensions.connection, payment_id: int) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT refund_id, status, refund_amount, gateway, gateway_reference, error_code FROM payment_refunds"
            " WHERE payment_id = %s ORDER BY refund_id",
            (payment_id,),
        )
        return cur.fetchall()


def ledger_invariant_holds(db: psycopg2.extensions.connection, payment_id: int) -> bool:
    """amount_refunded is the sum of the refunds that count: every one but the FAILED."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT p.amount_refunded = coalesce(sum(r.refund_amount) FILTER (WHERE r.status <> 'FAILED'), 0)"
            " FROM payments p LEFT JOIN payment_refunds r USING (payment_id)"
            " WHERE p.payment_id = %s GROUP BY p.payment_id",
            (payment_id,),
        )
        return cur.fetchone()[0]


def simulator_refunds(db: psycopg2.extensions.connection, payment_id: int) -> list[tuple[str, Decimal, str]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT idempotency_key, amount, status, reference FROM simulator_transactions"
            " WHERE kind = 'refund' AND payment_key = %s ORDER BY created_at",
            (f"payment-{payment_id}",),
        )
        return cur.fetchall()


def simulator_refunded(db: psycopg2.extensions.connection, payment_id: int) -> Decimal:
    with db.cursor() as cur:
        cur.execute(
            "SELECT amount_refunded FROM simulator_transactions WHERE idempotency_key = %s", (f"payment-{payment_id}",)
        )
        return cur.fetchone()[0]


def outbox_ids(db: psycopg2.extensions.connection) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT notification_id FROM notification_outbox WHERE event_type = 'refund'")
        return [row[0] for row in cur.fetchall()]


def leave_nothing_to_refund_at_the_simulator(db: psycopg2.extensions.connection, payment_id: int) -> None:
    """The simulator's books say the payment was refunded already (e.g. from its dashboard)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE simulator_transactions SET amount_refunded = amount WHERE idempotency_key = %s",
            (f"payment-{payment_id}",),
        )


# --- through the simulator --------------------------------------------------------------------------


def test_a_refund_of_a_card_payment_goes_through_the_gateway_and_succeeds(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = paid_by_card(charge_client, trips)

    response = refund(charge_client, payment_id, amount=10, reason="detour")

    assert response.status_code == 200
    body = response.get_json()
    assert (body["refund_status"], body["refund_amount"], body["amount_refunded"], body["remaining_amount"]) == (
        "SUCCEEDED", 10.0, 10.0, 21.25,
    )  # fmt: skip
    assert body["status"] == "PARTIALLY_REFUNDED"
    [(key, amount, status, reference)] = simulator_refunds(db, payment_id)
    assert (key, amount, status) == (f"refund-{body['refund_id']}", Decimal("10.00"), "SUCCEEDED")
    assert refund_records(db, payment_id) == [
        (body["refund_id"], "SUCCEEDED", Decimal("10.00"), "simulator", reference, None)
    ]
    assert simulator_refunded(db, payment_id) == Decimal("10.00")
    assert ledger_invariant_holds(db, payment_id)


def test_a_full_refund_through_the_gateway_refunds_the_payment(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = paid_by_card(charge_client, trips)

    response = refund(charge_client, payment_id)

    assert (response.get_json()["refund_status"], response.get_json()["status"]) == ("SUCCEEDED", "REFUNDED")
    assert stored_payment(db, payment_id) == (Decimal("31.25"), "REFUNDED")
    assert simulator_refunded(db, payment_id) == Decimal("31.25")


def test_a_refund_the_gateway_refuses_answers_502_gateway_refund_failed(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = paid_by_card(charge_client, trips)
    leave_nothing_to_refund_at_the_simulator(db, payment_id)

    response = refund(charge_client, payment_id, amount=10)

    assert response.status_code == 502
    body = response.get_json()
    assert (body["code"], body["payment_id"]) == ("gateway_refund_failed", payment_id)
    [(refund_id, *_)] = refund_records(db, payment_id)
    assert body["refund_id"] == refund_id
    assert [status for _, _, status, _ in simulator_refunds(db, payment_id)] == ["FAILED"]
    assert ledger_invariant_holds(db, payment_id)


def test_a_refund_the_gateway_refuses_is_recorded_failed_and_counts_nothing(
    charge_client: FlaskClient, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    payment_id = paid_by_card(charge_client, trips)
    leave_nothing_to_refund_at_the_simulator(db, payment_id)

    response = refund(charge_client, payment_id, amount=10)

    assert response.status_code == 502
    assert stored_payment(db, payment_id) == (Decimal("0.00"), "SUCCESS")
    [(refund_id, status, amount, gateway, _, error_code)] = refund_records(db, payment_id)
    assert (status, amount, gateway, error_code) == ("FAILED", Decimal("10.00"), "simulator", "GATEWAY_ERROR")
    assert f"refund-{refund_id}-failed" in outbox_ids(db)
    assert ledger_invariant_holds(db, payment_id)


def test_a_refund_the_gateway_refused_is_attempted_again_under_the_same_key(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = charge_app.test_client()
    payment_id = paid_by_card(client, trips)
    leave_nothing_to_refund_at_the_simulator(db, payment_id)
    refused = refund(client, payment_id, key="give-back", amount=10)
    with db.cursor() as cur:  # the simulator has the money again
        cur.execute("UPDATE simulator_transactions SET amount_refunded = 0 WHERE kind = 'payment'")
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))

    again = refund(client, payment_id, key="give-back", amount=10)

    assert refused.status_code == 502
    assert (again.status_code, again.get_json()["refund_status"]) == (200, "SUCCEEDED")
    assert "Idempotent-Replayed" not in again.headers
    assert gateway.refunds == 1
    assert [status for _, status, *_ in refund_records(db, payment_id)] == ["FAILED", "SUCCEEDED"]
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")
    assert ledger_invariant_holds(db, payment_id)


# --- no answer: PENDING, then reconciliation --------------------------------------------------------


def test_a_refund_without_an_answer_is_pending_counts_and_reconciliation_makes_it_succeed(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(reconciling_app, NoAnswer())

    pending = refund(client, payment_id, amount=20)
    too_much = refund(client, payment_id, amount=11.26)
    use_gateway(reconciling_app, simulator(reconciling_app, 1.0))
    report = services(reconciling_app).reconciler.run_once()

    assert pending.status_code == 200
    body = pending.get_json()
    assert (body["refund_status"], body["amount_refunded"], body["remaining_amount"]) == ("PENDING", 20.0, 11.25)
    assert (too_much.status_code, too_much.get_json()["code"]) == (400, "refund_exceeds_remaining")
    assert too_much.get_json()["remaining_amount"] == 11.25
    assert [(d.kind, d.row_id, d.result) for d in report.decisions] == [("refund", body["refund_id"], "succeeded")]
    [(refund_id, status, amount, gateway, reference, _)] = refund_records(db, payment_id)
    assert (refund_id, status, amount, gateway) == (body["refund_id"], "SUCCEEDED", Decimal("20.00"), "simulator")
    [(key, _, sim_status, sim_reference)] = simulator_refunds(db, payment_id)
    assert (key, sim_status, sim_reference) == (f"refund-{refund_id}", "SUCCEEDED", reference)
    assert stored_payment(db, payment_id) == (Decimal("20.00"), "PARTIALLY_REFUNDED")
    assert outbox_ids(db).count(f"refund-{refund_id}-succeeded") == 1
    assert ledger_invariant_holds(db, payment_id)


def test_a_gateway_that_crashes_on_a_refund_leaves_it_pending(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    class Exploding(StubGateway):
        def refund(self, refund: GatewayRefund) -> GatewayResult:
            raise TimeoutError("socket timed out")

    client = charge_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(charge_app, Exploding())

    response = refund(client, payment_id, amount=10)

    assert (response.status_code, response.get_json()["refund_status"]) == (200, "PENDING")
    assert [status for _, status, *_ in refund_records(db, payment_id)] == ["PENDING"]
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")


def test_a_settled_refund_is_not_settled_or_announced_again_by_a_later_pass(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(reconciling_app, NoAnswer())
    refund_id = refund(client, payment_id, amount=20).get_json()["refund_id"]
    gateway = use_gateway(reconciling_app, CountingGateway(simulator(reconciling_app, 1.0)))
    reconciler = services(reconciling_app).reconciler

    first, second = reconciler.run_once(), reconciler.run_once()

    assert (first.counts(), second.counts()) == ({"succeeded": 1}, {})
    assert gateway.refunds == 1
    assert outbox_ids(db) == [f"refund-{refund_id}-succeeded"]


def test_a_pending_refund_the_gateway_refuses_on_reconciliation_fails_and_stops_counting(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(reconciling_app, NoAnswer())
    pending = refund(client, payment_id).get_json()
    leave_nothing_to_refund_at_the_simulator(db, payment_id)
    use_gateway(reconciling_app, simulator(reconciling_app, 1.0))

    report = services(reconciling_app).reconciler.run_once()

    assert (pending["refund_status"], pending["status"], pending["remaining_amount"]) == ("PENDING", "REFUNDED", 0.0)
    assert [(d.row_id, d.result, d.status) for d in report.decisions] == [(pending["refund_id"], "failed", "FAILED")]
    [(_, status, _, _, _, error_code)] = refund_records(db, payment_id)
    assert (status, error_code) == ("FAILED", "GATEWAY_ERROR")
    assert stored_payment(db, payment_id) == (Decimal("0.00"), "SUCCESS")
    assert outbox_ids(db) == [f"refund-{pending['refund_id']}-failed"]
    assert ledger_invariant_holds(db, payment_id)


def test_a_refused_pending_refund_gives_back_only_its_own_amount(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    refund(client, payment_id, amount=10)
    use_gateway(reconciling_app, NoAnswer())
    pending = refund(client, payment_id).get_json()
    leave_nothing_to_refund_at_the_simulator(db, payment_id)
    use_gateway(reconciling_app, simulator(reconciling_app, 1.0))

    services(reconciling_app).reconciler.run_once()

    assert (pending["refund_amount"], pending["status"]) == (21.25, "REFUNDED")
    assert [status for _, status, *_ in refund_records(db, payment_id)] == ["SUCCEEDED", "FAILED"]
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")
    assert ledger_invariant_holds(db, payment_id)


def test_a_pending_refund_retried_with_its_key_replays_the_stored_answer_without_calling_the_gateway(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = charge_app.test_client()
    payment_id = paid_by_card(client, trips)
    gateway = use_gateway(
        charge_app, CountingGateway(simulator(charge_app, 1.0, pending_rate=1.0, settle_seconds=3600))
    )

    first = refund(client, payment_id, key="refund-once", amount=10)
    again = refund(client, payment_id, key="refund-once", amount=10)

    assert (first.status_code, first.get_json()["refund_status"]) == (200, "PENDING")
    assert again.status_code == 200
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert gateway.refunds == 1
    assert len(refund_records(db, payment_id)) == len(simulator_refunds(db, payment_id)) == 1
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")


def test_a_refund_without_an_answer_retried_with_its_key_replays_without_calling_the_gateway(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = charge_app.test_client()
    payment_id = paid_by_card(client, trips)
    gateway = use_gateway(charge_app, CountingGateway(NoAnswer()))

    first = refund(client, payment_id, key="refund-once", amount=10)
    again = refund(client, payment_id, key="refund-once", amount=10)

    assert (first.status_code, first.get_json()["refund_status"]) == (200, "PENDING")
    assert (again.get_data(), again.headers["Idempotent-Replayed"]) == (first.get_data(), "true")
    assert gateway.refunds == 1
    assert len(refund_records(db, payment_id)) == 1


# --- payments no gateway took, or another one -------------------------------------------------------


def test_a_cash_payment_is_refunded_in_the_ledger_alone(
    charge_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = charge_app.test_client()
    payment_id = paid_by_card(client, trips, method="CASH")
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))

    response = refund(client, payment_id, amount=10)

    assert (response.status_code, response.get_json()["refund_status"]) == (200, "SUCCEEDED")
    assert gateway.refunds == 0
    assert row_counts(db)["simulator_transactions"] == 0
    assert refund_records(db, payment_id) == [(response.get_json()["refund_id"], "SUCCEEDED", Decimal("10.00"), None,
                                               None, None)]  # fmt: skip
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")


def test_a_payment_loaded_from_a_csv_is_refunded_in_the_ledger_alone(
    charge_app: Flask, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment(amount=Decimal("31.25"), method="CARD")
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))

    response = refund(charge_app.test_client(), payment_id)

    assert (response.status_code, response.get_json()["refund_status"]) == (200, "SUCCEEDED")
    assert response.get_json()["status"] == "REFUNDED"
    assert gateway.refunds == 0
    assert row_counts(db)["simulator_transactions"] == 0
    assert [(status, gateway_name) for _, status, _, gateway_name, _, _ in refund_records(db, payment_id)] == [
        ("SUCCEEDED", None)
    ]
    assert f"refund-{response.get_json()['refund_id']}-succeeded" in outbox_ids(db)


def test_a_payment_whose_gateway_is_not_configured_is_503_gateway_not_configured_and_writes_nothing(
    charge_app: Flask, insert_payment: Callable[..., int], db: psycopg2.extensions.connection
) -> None:
    payment_id = insert_payment()
    with db.cursor() as cur:
        cur.execute(
            "UPDATE payments SET gateway = 'stripe', gateway_reference = 'pi_123' WHERE payment_id = %s", (payment_id,)
        )
    gateway = use_gateway(charge_app, CountingGateway(simulator(charge_app, 1.0)))
    before = row_counts(db)

    response = refund(charge_app.test_client(), payment_id, key="elsewhere", amount=10)

    assert (response.status_code, response.get_json()["code"]) == (503, "gateway_not_configured")
    assert response.get_json()["gateway"] == "stripe"
    assert row_counts(db) == before
    assert gateway.refunds == 0
    assert stored_payment(db, payment_id) == (Decimal("0.00"), "SUCCESS")


# --- concurrency ------------------------------------------------------------------------------------


def test_concurrent_refunds_through_the_gateway_never_exceed_the_payment(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    for round_ in range(20):
        payment_id = paid_by_card(client, trips, trip_id=101 + round_)

        responses = all_at_once([lambda p=payment_id: refund(client, p, amount=10) for _ in range(10)])

        statuses = Counter(r.status_code for r in responses)
        succeeded = [r.get_json() for r in responses if r.status_code == 200]
        assert statuses == {200: 3, 400: 7}, f"round {round_}: {statuses}"
        assert {r.get_json()["code"] for r in responses if r.status_code == 400} == {"refund_exceeds_remaining"}
        assert {body["refund_status"] for body in succeeded} == {"SUCCEEDED"}
        amount_refunded, status = stored_payment(db, payment_id)
        assert amount_refunded == Decimal(10 * len(succeeded)) <= Decimal("31.25")
        assert status == "PARTIALLY_REFUNDED"
        assert simulator_refunded(db, payment_id) == amount_refunded
        assert ledger_invariant_holds(db, payment_id)


# --- reconciliation meeting a refund still in flight, undecided, or unknown ------------------------


class HeldRefunds:
    """Wraps a gateway; each refund waits at the door until the test opens it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.needs_payment_method = inner.needs_payment_method
        self.waiting = threading.Event()
        self.open = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        self.waiting.set()
        assert self.open.wait(10)
        return self.inner.refund(refund)


def test_a_refund_reconciliation_settles_while_the_request_waits_for_the_gateway_moves_money_once(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    held = HeldRefunds(simulator(reconciling_app, 1.0))
    # Only the refund requests meet the held gateway; the reconciler keeps the plain simulator.
    services(reconciling_app).refunds.gateways = GatewayRegistry({"simulator": held}, "simulator")

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(refund, client, payment_id, "slow", amount=10)
        assert held.waiting.wait(10)
        report = services(reconciling_app).reconciler.run_once()
        held.open.set()
        response = in_flight.result(timeout=10)

    assert [(d.kind, d.result) for d in report.decisions] == [("refund", "succeeded")]
    assert (response.status_code, response.get_json()["refund_status"]) == (200, "SUCCEEDED")
    refund_id = response.get_json()["refund_id"]
    assert [(key, status) for key, _, status, _ in simulator_refunds(db, payment_id)] == [
        (f"refund-{refund_id}", "SUCCEEDED")
    ]
    assert simulator_refunded(db, payment_id) == Decimal("10.00")
    assert outbox_ids(db) == [f"refund-{refund_id}-succeeded"]
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")
    assert ledger_invariant_holds(db, payment_id)


def test_a_refund_the_gateway_holds_undecided_is_settled_by_reconciliation_once_due(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(reconciling_app, simulator(reconciling_app, 1.0, pending_rate=1.0, settle_seconds=0))

    pending = refund(client, payment_id, amount=10).get_json()
    report = services(reconciling_app).reconciler.run_once()

    assert pending["refund_status"] == "PENDING"
    assert [(d.row_id, d.result) for d in report.decisions] == [(pending["refund_id"], "succeeded")]
    assert [status for _, status, *_ in refund_records(db, payment_id)] == ["SUCCEEDED"]
    assert outbox_ids(db) == [f"refund-{pending['refund_id']}-succeeded"]
    assert simulator_refunded(db, payment_id) == stored_payment(db, payment_id)[0] == Decimal("10.00")


def test_a_refund_the_gateway_has_not_decided_yet_stays_pending_and_is_looked_at_later(
    reconciling_app: Flask, trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    client = reconciling_app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(reconciling_app, simulator(reconciling_app, 1.0, pending_rate=1.0, settle_seconds=3600))

    pending = refund(client, payment_id, amount=10).get_json()
    report = services(reconciling_app).reconciler.run_once()
    again = services(reconciling_app).reconciler.run_once()

    assert [(d.row_id, d.result) for d in report.decisions] == [(pending["refund_id"], "pending")]
    assert again.decisions == []  # backed off
    with db.cursor() as cur:
        cur.execute("SELECT status, reconcile_attempts, reconcile_after > now() FROM payment_refunds")
        assert cur.fetchall() == [("PENDING", 1, True)]
    assert stored_payment(db, payment_id) == (Decimal("10.00"), "PARTIALLY_REFUNDED")
    assert outbox_ids(db) == []


def test_a_pending_refund_the_gateway_never_saw_fails_with_no_record_once_old(
    make_app: Callable[..., Flask], trips: FakeTripService, db: psycopg2.extensions.connection
) -> None:
    app = make_app(
        TRIP_SERVICE_URL=trips.url, GATEWAY_SUCCESS_RATE=1.0, RECONCILE_MIN_AGE=0, RECONCILE_INTERVAL=0,
        RECONCILE_NO_RECORD_AFTER=0, NOTIFY_DISPATCHER_ENABLED=False,
    )  # fmt: skip
    client = app.test_client()
    payment_id = paid_by_card(client, trips)
    use_gateway(app, NoAnswer())
    pending = refund(client, payment_id, amount=10).get_json()
    gateway = use_gateway(app, CountingGateway(simulator(app, 1.0)))

    report = services(app).reconciler.run_once()

    assert [(d.row_id, d.result, d.error_code) for d in report.decisions] == [
        (pending["refund_id"], "no_record", "GATEWAY_NO_RECORD")
    ]
    assert gateway.refunds == 0
    assert [(status, code) for _, status, _, _, _, code in refund_records(db, payment_id)] == [
        ("FAILED", "GATEWAY_NO_RECORD")
    ]
    assert stored_payment(db, payment_id) == (Decimal("0.00"), "SUCCESS")
    assert simulator_refunds(db, payment_id) == []
    assert ledger_invariant_holds(db, payment_id)
