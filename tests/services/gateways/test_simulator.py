"""The embedded gateway simulator on the real test database: verdicts, holds, refunds, and outages."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from database.pool import ConnectionPool
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    GATEWAY_ERROR_CODES,
    PENDING,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayRefund,
    GatewayResult,
    GatewayUnavailableError,
)
from services.gateways.simulator.gateway import SimulatedGateway
from tests.helpers import all_at_once, closed_port

AMOUNT = Decimal("31.25")


@pytest.fixture
def pool(make_app: Callable[..., Flask]) -> ConnectionPool:
    """The pool of an app on the clean test database, with no background thread borrowing from it."""
    return services(make_app(NOTIFY_DISPATCHER_ENABLED=False, RECONCILE_INTERVAL=0)).pool


@pytest.fixture
def away() -> Iterator[ConnectionPool]:
    """A pool to a port nothing listens on: the simulator's database is unreachable."""
    pool = ConnectionPool(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", size=1, wait_timeout=1,
                          connect_timeout=1)  # fmt: skip
    yield pool
    pool.close()


def payment(payment_id: int = 1, amount: Decimal = AMOUNT, capture: bool = True) -> GatewayCharge:
    return GatewayCharge(payment_id, 100 + payment_id, amount, "INR", "CARD", capture=capture)


def refund_of(charge: GatewayCharge, refund_id: int, amount: Decimal | str) -> GatewayRefund:
    return GatewayRefund(refund_id, charge, Decimal(amount))


def ledger(db: psycopg2.extensions.connection, key: str) -> dict[str, Any] | None:
    with db.cursor() as cur:
        cur.execute(
            "SELECT kind, status, error_code, amount, amount_captured, amount_refunded, payment_key, reference"
            " FROM simulator_transactions WHERE idempotency_key = %s",
            (key,),
        )
        row = cur.fetchone()
        return None if row is None else dict(zip([c.name for c in cur.description], row, strict=True))


def ledger_rows(db: psycopg2.extensions.connection, kind: str | None = None) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM simulator_transactions WHERE %(kind)s IS NULL OR kind = %(kind)s",
                    {"kind": kind})  # fmt: skip
        return cur.fetchone()[0]


def paid(pool: ConnectionPool, payment_id: int = 1, amount: Decimal = AMOUNT) -> GatewayCharge:
    """A payment the simulator took in full."""
    charge = payment(payment_id, amount)
    assert SimulatedGateway(pool, 1.0).authorize(charge).status == SUCCESS
    return charge


def held(pool: ConnectionPool, payment_id: int = 1, amount: Decimal = AMOUNT) -> GatewayCharge:
    """A payment the simulator holds without having captured it."""
    charge = payment(payment_id, amount, capture=False)
    assert SimulatedGateway(pool, 1.0).authorize(charge).status == AUTHORIZED
    return charge


# --- authorize --------------------------------------------------------------------------------------


def test_an_approving_simulator_takes_the_money_and_answers_with_a_reference(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    result = SimulatedGateway(pool, 1.0).authorize(payment())

    assert (result.status, result.error_code) == (SUCCESS, None)
    assert result.reference and result.reference.startswith("sim_")
    row = ledger(db, "payment-1")
    assert (row["kind"], row["status"], row["amount_captured"]) == ("payment", "SUCCEEDED", AMOUNT)
    assert row["reference"] == result.reference


def test_a_refusing_simulator_fails_the_charge_with_one_of_the_contract_error_codes(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    result = SimulatedGateway(pool, 0.0).authorize(payment())

    assert result.status == FAILED
    assert result.error_code in GATEWAY_ERROR_CODES
    row = ledger(db, "payment-1")
    assert (row["status"], row["error_code"], row["amount_captured"]) == ("FAILED", result.error_code, 0)


def test_an_authorization_without_capture_only_holds_the_money(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    result = SimulatedGateway(pool, 1.0).authorize(payment(capture=False))

    assert (result.status, result.error_code) == (AUTHORIZED, None)
    row = ledger(db, "payment-1")
    assert (row["status"], row["amount_captured"]) == ("REQUIRES_CAPTURE", 0)


def test_a_seeded_coin_makes_the_verdicts_repeatable_and_follow_the_rate(pool: ConnectionPool) -> None:
    first = SimulatedGateway(pool, 0.5, rng=random.Random(7))
    second = SimulatedGateway(pool, 0.5, rng=random.Random(7))

    a = [first.authorize(payment(n)) for n in range(1, 41)]
    b = [second.authorize(payment(n)) for n in range(41, 81)]

    assert [(r.status, r.error_code) for r in a] == [(r.status, r.error_code) for r in b]
    assert 0 < Counter(r.status for r in a)[SUCCESS] < 40
    assert {r.error_code for r in a if r.status == FAILED} <= set(GATEWAY_ERROR_CODES)


@pytest.mark.parametrize(("first_rate", "second_rate"), [(1.0, 0.0), (0.0, 1.0)])
def test_a_second_authorize_of_a_payment_answers_the_first_verdict_and_writes_no_second_row(
    pool: ConnectionPool, db: psycopg2.extensions.connection, first_rate: float, second_rate: float
) -> None:
    first = SimulatedGateway(pool, first_rate).authorize(payment())

    again = SimulatedGateway(pool, second_rate, pending_rate=1.0).authorize(payment())

    assert again == first
    assert ledger_rows(db) == 1


def test_a_simulator_started_after_a_restart_retrieves_what_happened(pool: ConnectionPool) -> None:
    taken = SimulatedGateway(pool, 1.0).authorize(payment(1))
    refused = SimulatedGateway(pool, 0.0).authorize(payment(2))

    restarted = SimulatedGateway(pool, 0.0, pending_rate=1.0)

    assert restarted.retrieve(payment(1)) == taken
    assert restarted.retrieve(payment(2)) == refused


def test_retrieving_a_payment_the_simulator_never_saw_answers_absent(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    assert SimulatedGateway(pool, 1.0).retrieve(payment(404)) == GatewayResult(ABSENT)
    assert ledger_rows(db) == 0


def test_registering_moves_no_money_and_records_nothing(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    assert SimulatedGateway(pool, 1.0).register(payment()) is None
    assert ledger_rows(db) == 0


# --- undecided charges ------------------------------------------------------------------------------


def test_a_pending_charge_stays_pending_until_it_is_due_to_settle(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0, pending_rate=1.0, settle_seconds=3600)

    answered = gateway.authorize(payment())
    looked_up = gateway.retrieve(payment())

    assert (answered.status, looked_up.status) == (PENDING, PENDING)
    assert looked_up.reference == answered.reference
    assert (ledger(db, "payment-1")["status"], ledger(db, "payment-1")["amount_captured"]) == ("PENDING", 0)


@pytest.mark.parametrize(("success_rate", "status", "captured"), [(1.0, SUCCESS, AMOUNT), (0.0, FAILED, 0)])
def test_a_pending_charge_due_now_is_decided_by_the_success_rate_at_the_first_retrieve(
    pool: ConnectionPool, db: psycopg2.extensions.connection, success_rate: float, status: str, captured: Decimal
) -> None:
    gateway = SimulatedGateway(pool, success_rate, pending_rate=1.0, settle_seconds=0)
    answered = gateway.authorize(payment())

    decided = gateway.retrieve(payment())
    later = SimulatedGateway(pool, 1.0 - success_rate).retrieve(payment())

    assert answered.status == PENDING
    assert decided.status == status
    assert (decided.error_code in GATEWAY_ERROR_CODES) if status == FAILED else decided.error_code is None
    assert later == decided
    assert ledger(db, "payment-1")["amount_captured"] == captured


def test_a_pending_hold_settles_as_a_hold_not_as_a_capture(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0, pending_rate=1.0, settle_seconds=0)
    assert gateway.authorize(payment(capture=False)).status == PENDING

    decided = gateway.retrieve(payment(capture=False))

    assert decided.status == AUTHORIZED
    assert (ledger(db, "payment-1")["status"], ledger(db, "payment-1")["amount_captured"]) == ("REQUIRES_CAPTURE", 0)


# --- capture and void -------------------------------------------------------------------------------


def test_capturing_part_of_a_hold_takes_that_part_and_capturing_again_changes_nothing(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    hold = held(pool)

    captured = gateway.capture(hold, Decimal("20.00"))
    again = gateway.capture(hold, Decimal("20.00"))

    assert (captured.status, captured.error_code) == (SUCCESS, None)
    assert again == captured
    row = ledger(db, "payment-1")
    assert (row["status"], row["amount"], row["amount_captured"]) == ("SUCCEEDED", AMOUNT, Decimal("20.00"))


def test_capturing_more_than_is_held_is_refused_and_answers_that_the_hold_stands(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    hold = held(pool)

    result = gateway.capture(hold, AMOUNT + Decimal("0.01"))

    assert (result.status, result.error_code) == (AUTHORIZED, None)
    assert (ledger(db, "payment-1")["status"], ledger(db, "payment-1")["amount_captured"]) == ("REQUIRES_CAPTURE", 0)
    assert gateway.capture(hold, AMOUNT).status == SUCCESS


def test_voiding_a_hold_releases_it_and_voiding_again_changes_nothing(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    hold = held(pool)

    voided = gateway.void(hold)
    again = gateway.void(hold)

    assert voided.status == VOIDED
    assert again == voided
    assert gateway.retrieve(hold).status == VOIDED
    # A refused capture answers where the payment stands: released.
    assert gateway.capture(hold, AMOUNT).status == VOIDED
    assert ledger(db, "payment-1")["status"] == "CANCELED"


def test_a_captured_payment_cannot_be_voided_and_the_answer_says_it_was_taken(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    charge = paid(pool)

    result = SimulatedGateway(pool, 1.0).void(charge)

    assert (result.status, result.error_code) == (SUCCESS, None)
    assert result.reference == ledger(db, "payment-1")["reference"]
    assert ledger(db, "payment-1")["status"] == "SUCCEEDED"


@pytest.mark.parametrize("call", ["capture", "void"])
def test_capturing_or_voiding_a_payment_the_simulator_never_saw_fails(
    pool: ConnectionPool, db: psycopg2.extensions.connection, call: str
) -> None:
    gateway = SimulatedGateway(pool, 1.0)

    result = gateway.capture(payment(), AMOUNT) if call == "capture" else gateway.void(payment())

    assert (result.status, result.reference) == (FAILED, None)
    assert ledger_rows(db) == 0


# --- refunds ----------------------------------------------------------------------------------------


def test_refunds_up_to_the_captured_amount_succeed(pool: ConnectionPool, db: psycopg2.extensions.connection) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    charge = paid(pool)

    first = gateway.refund(refund_of(charge, 1, "20.00"))
    rest = gateway.refund(refund_of(charge, 2, "11.25"))

    assert (first.status, rest.status) == (SUCCESS, SUCCESS)
    assert first.reference.startswith("simre_") and rest.reference != first.reference
    assert ledger(db, "payment-1")["amount_refunded"] == AMOUNT
    row = ledger(db, "refund-1")
    assert (row["kind"], row["status"], row["amount"], row["payment_key"]) == (
        "refund", "SUCCEEDED", Decimal("20.00"), "payment-1",
    )  # fmt: skip
    assert gateway.retrieve_refund(refund_of(charge, 2, "11.25")) == rest


def test_a_refund_of_more_than_is_left_is_refused_and_reserves_nothing(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    charge = paid(pool)
    gateway.refund(refund_of(charge, 1, "20.00"))

    refused = gateway.refund(refund_of(charge, 2, "11.26"))

    assert (refused.status, refused.error_code) == (FAILED, "GATEWAY_ERROR")
    assert ledger(db, "payment-1")["amount_refunded"] == Decimal("20.00")
    assert ledger(db, "refund-2")["status"] == "FAILED"
    assert gateway.refund(refund_of(charge, 3, "11.25")).status == SUCCESS


def test_only_the_captured_part_of_a_hold_can_be_refunded(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    hold = held(pool)
    before_capture = gateway.refund(refund_of(hold, 1, "1.00"))
    gateway.capture(hold, Decimal("20.00"))

    too_much = gateway.refund(refund_of(hold, 2, "20.01"))
    all_captured = gateway.refund(refund_of(hold, 3, "20.00"))

    assert (before_capture.status, too_much.status, all_captured.status) == (FAILED, FAILED, SUCCESS)
    assert ledger(db, "payment-1")["amount_refunded"] == Decimal("20.00")


def test_a_refused_charge_cannot_be_refunded(pool: ConnectionPool, db: psycopg2.extensions.connection) -> None:
    charge = payment()
    SimulatedGateway(pool, 0.0).authorize(charge)

    result = SimulatedGateway(pool, 1.0).refund(refund_of(charge, 1, "1.00"))

    assert result.status == FAILED
    assert ledger(db, "payment-1")["amount_refunded"] == 0


def test_a_refund_of_a_payment_the_simulator_never_took_is_refused_and_writes_nothing(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    result = SimulatedGateway(pool, 1.0).refund(refund_of(payment(404), 1, "1.00"))

    assert (result.status, result.error_code) == (FAILED, "GATEWAY_ERROR")
    assert ledger_rows(db) == 0


def test_a_repeated_refund_answers_the_first_verdict_and_writes_one_row(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    charge = paid(pool)
    first = SimulatedGateway(pool, 1.0).refund(refund_of(charge, 1, "10.00"))

    again = SimulatedGateway(pool, 0.0, pending_rate=1.0).refund(refund_of(charge, 1, "10.00"))

    assert first.status == SUCCESS
    assert again == first
    assert ledger_rows(db, "refund") == 1
    assert ledger(db, "payment-1")["amount_refunded"] == Decimal("10.00")


def test_a_repeated_refused_refund_stays_refused_even_once_the_money_is_there(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    charge = paid(pool)
    gateway.refund(refund_of(charge, 1, "30.00"))
    refused = gateway.refund(refund_of(charge, 2, "10.00"))
    with db.cursor() as cur:  # the first refund's money is back in the simulator's books
        cur.execute("UPDATE simulator_transactions SET amount_refunded = 0 WHERE idempotency_key = 'payment-1'")

    again = gateway.refund(refund_of(charge, 2, "10.00"))

    assert again == refused
    assert ledger(db, "payment-1")["amount_refunded"] == 0


def test_a_pending_refund_counts_at_once_and_succeeds_when_due(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    charge = paid(pool)
    later = SimulatedGateway(pool, 1.0, pending_rate=1.0, settle_seconds=3600)
    now = SimulatedGateway(pool, 1.0, pending_rate=1.0, settle_seconds=0)

    waiting = later.refund(refund_of(charge, 1, "10.00"))
    due = now.refund(refund_of(charge, 2, "21.25"))

    assert (waiting.status, due.status) == (PENDING, PENDING)
    assert ledger(db, "payment-1")["amount_refunded"] == AMOUNT
    assert now.refund(refund_of(charge, 3, "0.01")).status == FAILED
    assert later.retrieve_refund(refund_of(charge, 1, "10.00")).status == PENDING
    assert now.retrieve_refund(refund_of(charge, 2, "21.25")) == GatewayResult(SUCCESS, None, due.reference)
    assert ledger(db, "refund-2")["status"] == "SUCCEEDED"


def test_retrieving_a_refund_the_simulator_never_saw_answers_absent(pool: ConnectionPool) -> None:
    charge = paid(pool)

    assert SimulatedGateway(pool, 1.0).retrieve_refund(refund_of(charge, 9, "1.00")) == GatewayResult(ABSENT)


@pytest.mark.parametrize(("amount", "succeeding"), [(Decimal("10.00"), 3), (Decimal("7.00"), 4), (Decimal("3.13"), 9)])
def test_concurrent_refunds_never_reserve_more_than_was_captured(
    pool: ConnectionPool, db: psycopg2.extensions.connection, amount: Decimal, succeeding: int
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    for round_ in range(5):
        payment_id = round_ + 1
        charge = paid(pool, payment_id)
        refunds = [refund_of(charge, payment_id * 100 + n, amount) for n in range(10)]

        results = all_at_once([lambda r=r: gateway.refund(r) for r in refunds])

        assert Counter(r.status for r in results) == {SUCCESS: succeeding, FAILED: 10 - succeeding}
        assert ledger(db, f"payment-{payment_id}")["amount_refunded"] == amount * succeeding <= AMOUNT
        with db.cursor() as cur:
            cur.execute("SELECT coalesce(sum(amount), 0) FROM simulator_transactions"
                        " WHERE payment_key = %s AND status <> 'FAILED'", (f"payment-{payment_id}",))  # fmt: skip
            assert cur.fetchone()[0] == amount * succeeding


def test_the_same_refund_sent_concurrently_is_decided_once(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 1.0)
    refund = refund_of(paid(pool), 1, "10.00")

    results = all_at_once([lambda: gateway.refund(refund) for _ in range(10)])

    assert len(set(results)) == 1 and results[0].status == SUCCESS
    assert ledger_rows(db, "refund") == 1
    assert ledger(db, "payment-1")["amount_refunded"] == Decimal("10.00")


def test_concurrent_authorizations_of_one_payment_take_it_once(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    gateway = SimulatedGateway(pool, 0.5, rng=random.Random(3))

    results = all_at_once([lambda: gateway.authorize(payment()) for _ in range(10)])

    assert len(set(results)) == 1
    assert ledger_rows(db) == 1


# --- outages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.authorize(payment()),
        lambda g: g.retrieve(payment()),
        lambda g: g.capture(payment(capture=False), AMOUNT),
        lambda g: g.void(payment(capture=False)),
        lambda g: g.refund(refund_of(payment(), 1, "1.00")),
        lambda g: g.retrieve_refund(refund_of(payment(), 1, "1.00")),
    ],
    ids=["authorize", "retrieve", "capture", "void", "refund", "retrieve_refund"],
)
def test_an_unreachable_ledger_is_a_gateway_that_did_not_answer(
    away: ConnectionPool, call: Callable[[SimulatedGateway], GatewayResult]
) -> None:
    with pytest.raises(GatewayUnavailableError):
        call(SimulatedGateway(away, 1.0))
