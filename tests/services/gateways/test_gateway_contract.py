"""What every gateway promises (the PaymentGateway protocol), checked alike on the simulator, Stripe and the tests' own.

Each gateway is built by its registry entry (`GATEWAYS[name].build`) from the settings, on the real
test database (simulator), a real Stripe-compatible server (localstripe) or in memory; the tests below
call the protocol's methods the way the payment core does (register, record the reference,
authorize, then capture, void, refund and look up with the reference recorded) and read what moved
in the gateway's own records. Stripe runs behind tests/stripe_server.py's proxy replaying repeated
idempotency keys as Stripe does, since localstripe ignores them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from flask import Flask

from api.services import services
from config import Config
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    GATEWAY_ERROR_CODES,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayRefund,
    GatewayResult,
    PaymentGateway,
)
from services.gateways.registry import GATEWAYS
from tests.gateways_extra import memory
from tests.stripe_server import API_KEY, GatewayProxy, LocalStripe

AMOUNT = Decimal("31.25")


@dataclass
class Subject:
    """A gateway under test: one that approves `card`, one that refuses `declined_card`, and what moved there."""

    name: str
    gateway: PaymentGateway
    card: str | None
    refusing: PaymentGateway
    declined_card: str | None
    # (payments that took or hold money, refunds that gave some back), as the gateway's own records say.
    movements: Callable[[], tuple[int, int]]
    # What the gateway's records say it took for a payment.
    taken: Callable[[GatewayCharge], Decimal]
    # Whether it refuses a refund above what remains of the payment (localstripe does not; Stripe does).
    limits_refunds: bool = True


def _simulator(config: Config, db: psycopg2.extensions.connection, pool: Any) -> Subject:
    def movements() -> tuple[int, int]:
        with db.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE kind = 'payment' AND status IN ('SUCCEEDED', 'REQUIRES_CAPTURE')),"
                "       count(*) FILTER (WHERE kind = 'refund' AND status = 'SUCCEEDED')"
                " FROM simulator_transactions"
            )
            return cur.fetchone()

    def taken(charge: GatewayCharge) -> Decimal:
        with db.cursor() as cur:
            cur.execute(
                "SELECT amount_captured FROM simulator_transactions WHERE idempotency_key = %s",
                (charge.idempotency_key,),
            )
            row = cur.fetchone()
            return Decimal(0) if row is None else row[0]

    approving = config.with_overrides({"GATEWAY_SUCCESS_RATE": 1.0, "GATEWAY_PENDING_RATE": 0.0})
    refusing = config.with_overrides({"GATEWAY_SUCCESS_RATE": 0.0, "GATEWAY_PENDING_RATE": 0.0})
    build = GATEWAYS["simulator"].build
    return Subject("simulator", build(approving, pool), None, build(refusing, pool), None, movements, taken)


def _stripe(config: Config, localstripe: LocalStripe, proxy: GatewayProxy, pool: Any) -> Subject:
    def movements() -> tuple[int, int]:
        intents = localstripe.payment_intents()
        # localstripe releases the rest of a partly captured hold as a refund without our metadata.
        refunds = [
            r
            for i in intents
            if i.status == "succeeded"
            for r in localstripe.refunds(i.id)
            if "refund_id" in (r.metadata or {}) and r.status == "succeeded"
        ]
        return sum(1 for i in intents if i.status in ("succeeded", "requires_capture")), len(refunds)

    def taken(charge: GatewayCharge) -> Decimal:
        intent = localstripe.client.v1.payment_intents.retrieve(charge.reference or "")
        return Decimal(localstripe.captured(intent)).scaleb(-2) if intent.status == "succeeded" else Decimal(0)

    proxy.replay_idempotent = True
    settings = config.with_overrides(
        {"GATEWAY": "stripe", "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": proxy.url, "RECONCILE_INTERVAL": 0}
    )
    gateway = GATEWAYS["stripe"].build(settings, pool)
    return Subject(
        "stripe", gateway, "pm_card_visa", gateway, "pm_card_chargeCustomerFail", movements, taken, limits_refunds=False
    )


def _memory(config: Config, pool: Any) -> Subject:
    gateway = GATEWAYS[memory.NAME].build(config, pool)
    assert isinstance(gateway, memory.MemoryGateway)

    def taken(charge: GatewayCharge) -> Decimal:
        entry = gateway.ledger.get(charge.idempotency_key)
        return Decimal(0) if entry is None or entry.status != SUCCESS else entry.captured

    return Subject(memory.NAME, gateway, None, gateway, memory.DECLINED, gateway.movements, taken)


@pytest.fixture(params=["simulator", "stripe", memory.NAME])
def subject(request: pytest.FixtureRequest, make_app: Callable[..., Flask], test_config: Config) -> Iterator[Subject]:
    """Each gateway in turn, built by its registry entry from the test settings."""
    pool = services(make_app(NOTIFY_DISPATCHER_ENABLED=False, RECONCILE_INTERVAL=0)).pool
    if request.param == "simulator":
        yield _simulator(test_config, request.getfixturevalue("db"), pool)
    elif request.param == "stripe":
        yield _stripe(
            test_config, request.getfixturevalue("localstripe"), request.getfixturevalue("stripe_proxy"), pool
        )
    else:
        request.getfixturevalue("memory_gateway")
        yield _memory(test_config, pool)


def registered(
    subject: Subject, payment_id: int = 1, amount: Decimal = AMOUNT, capture: bool = True, declined: bool = False
) -> GatewayCharge:
    """A card payment made known to the gateway, with the reference it answered recorded (as the core does)."""
    gateway = subject.refusing if declined else subject.gateway
    card = subject.declined_card if declined else subject.card
    charge = GatewayCharge(payment_id, 100 + payment_id, amount, "INR", "CARD", card, capture=capture)
    return dataclasses.replace(charge, reference=gateway.register(charge))


def authorized(subject: Subject, payment_id: int = 1, amount: Decimal = AMOUNT, capture: bool = True) -> GatewayCharge:
    """A payment the gateway took (or holds), carrying the reference its answer gave."""
    charge = registered(subject, payment_id, amount, capture)
    result = subject.gateway.authorize(charge)
    assert result.status == (SUCCESS if capture else AUTHORIZED)
    return dataclasses.replace(charge, reference=result.reference or charge.reference)


def a_refund(charge: GatewayCharge, refund_id: int, amount: str) -> GatewayRefund:
    return GatewayRefund(refund_id, charge, Decimal(amount))


def needs_refund_limits(subject: Subject) -> None:
    """Skip a check of refund limits on a gateway whose test server does not keep them."""
    if not subject.limits_refunds:
        pytest.skip(f"{subject.name}'s test server accepts any refund amount (the real one refuses)")


# --- register and authorize -------------------------------------------------------------------------


def test_registering_moves_no_money_and_the_payment_is_absent_until_authorized(subject: Subject) -> None:
    charge = registered(subject)

    assert subject.gateway.retrieve(charge).status == ABSENT
    assert subject.movements() == (0, 0)

    result = subject.gateway.authorize(charge)

    assert result.status == SUCCESS and result.reference
    if charge.reference is not None:
        # A gateway that answered a reference at registration keeps it for the money movement.
        assert result.reference == charge.reference
    assert subject.movements() == (1, 0)


def test_an_approved_charge_is_taken_in_full_and_retrieved_as_taken(subject: Subject) -> None:
    charge = authorized(subject)

    found = subject.gateway.retrieve(charge)

    assert (found.status, found.error_code, found.reference) == (SUCCESS, None, charge.reference)
    assert found.captured in (None, AMOUNT)
    assert subject.taken(charge) == AMOUNT


def test_an_authorization_without_capture_only_holds_the_money(subject: Subject) -> None:
    charge = authorized(subject, capture=False)

    found = subject.gateway.retrieve(charge)

    assert (found.status, found.reference) == (AUTHORIZED, charge.reference)
    assert found.captured is None
    assert subject.taken(charge) == 0


def test_a_declined_card_fails_with_one_of_the_contract_error_codes_and_moves_nothing(subject: Subject) -> None:
    charge = registered(subject, declined=True)

    result = subject.refusing.authorize(charge)

    assert result.status == FAILED
    assert result.error_code in GATEWAY_ERROR_CODES
    assert subject.refusing.retrieve(dataclasses.replace(charge, reference=result.reference)).status == FAILED
    assert subject.movements() == (0, 0)


def test_a_payment_the_gateway_never_saw_is_absent(subject: Subject) -> None:
    unknown = GatewayCharge(404, 504, AMOUNT, "INR", "CARD")

    assert subject.gateway.retrieve(unknown) == GatewayResult(ABSENT)


# --- capture and void -------------------------------------------------------------------------------


def test_capturing_a_whole_hold_takes_all_of_it(subject: Subject) -> None:
    hold = authorized(subject, capture=False)

    result = subject.gateway.capture(hold, AMOUNT)

    assert (result.status, result.reference) == (SUCCESS, hold.reference)
    assert subject.gateway.retrieve(hold).status == SUCCESS
    assert result.captured in (None, AMOUNT)
    assert subject.taken(hold) == AMOUNT


def test_capturing_part_of_a_hold_takes_that_part(subject: Subject) -> None:
    hold = authorized(subject, capture=False)

    result = subject.gateway.capture(hold, Decimal("25.00"))

    assert result.status == SUCCESS
    assert result.captured in (None, Decimal("25.00"))
    assert subject.taken(hold) == Decimal("25.00")


def test_only_the_captured_part_of_a_hold_can_be_refunded(subject: Subject) -> None:
    needs_refund_limits(subject)
    hold = authorized(subject, capture=False)
    assert subject.gateway.capture(hold, Decimal("25.00")).status == SUCCESS

    assert subject.gateway.refund(a_refund(hold, 1, "25.01")).status == FAILED
    assert subject.gateway.refund(a_refund(hold, 2, "25.00")).status == SUCCESS


def test_capturing_more_than_is_held_is_refused_and_the_hold_stands(subject: Subject) -> None:
    hold = authorized(subject, capture=False)

    refused = subject.gateway.capture(hold, AMOUNT + 1)

    assert refused.status == AUTHORIZED
    assert subject.gateway.retrieve(hold).status == AUTHORIZED
    assert subject.taken(hold) == 0


def test_voiding_a_hold_releases_it(subject: Subject) -> None:
    hold = authorized(subject, capture=False)

    result = subject.gateway.void(hold)

    assert (result.status, result.reference) == (VOIDED, hold.reference)
    assert subject.gateway.retrieve(hold).status == VOIDED
    assert subject.movements() == (0, 0)


def test_a_captured_payment_cannot_be_voided_and_the_answer_says_it_was_taken(subject: Subject) -> None:
    hold = authorized(subject, capture=False)
    assert subject.gateway.capture(hold, AMOUNT).status == SUCCESS

    assert subject.gateway.void(hold).status == SUCCESS
    assert subject.gateway.retrieve(hold).status == SUCCESS


# --- refunds ----------------------------------------------------------------------------------------


def test_refunds_of_parts_of_a_payment_succeed_and_are_retrieved_by_their_verdict(subject: Subject) -> None:
    charge = authorized(subject)

    first = subject.gateway.refund(a_refund(charge, 1, "20.00"))
    second = subject.gateway.refund(a_refund(charge, 2, "11.25"))

    assert (first.status, second.status) == (SUCCESS, SUCCESS)
    assert first.reference and second.reference and first.reference != second.reference
    found = subject.gateway.retrieve_refund(
        dataclasses.replace(a_refund(charge, 1, "20.00"), reference=first.reference)
    )
    assert (found.status, found.reference) == (SUCCESS, first.reference)
    # Looked up without its reference (the answer was lost), the refund is found by its own id.
    assert subject.gateway.retrieve_refund(a_refund(charge, 2, "11.25")).status == SUCCESS
    assert subject.movements() == (1, 2)


def test_a_refund_of_more_than_remains_is_refused(subject: Subject) -> None:
    needs_refund_limits(subject)
    charge = authorized(subject)
    assert subject.gateway.refund(a_refund(charge, 1, "31.00")).status == SUCCESS

    refused = subject.gateway.refund(a_refund(charge, 2, "0.26"))

    assert refused.status == FAILED
    assert subject.movements() == (1, 1)


def test_a_refund_the_gateway_never_saw_is_absent(subject: Subject) -> None:
    charge = authorized(subject)

    assert subject.gateway.retrieve_refund(a_refund(charge, 404, "1.00")).status == ABSENT


# --- idempotency: the same key twice moves money once -----------------------------------------------


def test_authorizing_the_same_payment_twice_answers_the_first_verdict_and_takes_the_money_once(
    subject: Subject,
) -> None:
    charge = registered(subject)

    first = subject.gateway.authorize(charge)
    again = subject.gateway.authorize(charge)

    assert (again.status, again.reference) == (first.status, first.reference) == (SUCCESS, first.reference)
    assert subject.movements() == (1, 0)


def test_capturing_or_voiding_twice_changes_nothing_the_second_time(subject: Subject) -> None:
    captured = authorized(subject, 1, capture=False)
    voided = authorized(subject, 2, capture=False)

    assert subject.gateway.capture(captured, Decimal("25.00")).status == SUCCESS
    assert subject.gateway.capture(captured, Decimal("25.00")).status == SUCCESS
    assert subject.gateway.void(voided).status == VOIDED
    assert subject.gateway.void(voided).status == VOIDED

    assert subject.taken(captured) == Decimal("25.00")
    assert subject.movements() == (1, 0)


def test_the_same_refund_sent_twice_gives_the_money_back_once(subject: Subject) -> None:
    charge = authorized(subject)

    first = subject.gateway.refund(a_refund(charge, 1, "20.00"))
    again = subject.gateway.refund(a_refund(charge, 1, "20.00"))

    assert (again.status, again.reference) == (first.status, first.reference) == (SUCCESS, first.reference)
    assert subject.movements() == (1, 1)


# --- amounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("amount", "currency"), [("31.25", "INR"), ("0.01", "USD"), ("2429", "JPY")])
def test_every_gateway_carries_a_whole_number_of_the_currency_s_smallest_unit(
    subject: Subject, amount: str, currency: str
) -> None:
    assert subject.gateway.can_carry(Decimal(amount), currency)
