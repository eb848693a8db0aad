"""A payment's life, declared once: statuses, transaction kinds, allowed transitions, guards, gateway outcomes.

Everything else reads these names: the services' SQL guards, the database (CHECK constraints and the
`payment_status_transitions` table its trigger enforces, migration 0011), and `openapi.yaml`'s enums;
tests/models/test_states.py fails when any of them disagrees with this module.

A payment is a list of transactions (after Kill Bill): each money operation is one row of
`payment_transactions` with its own kind, status, amount and gateway reference. The payment's own
status is the summary a client reads; `TRANSITIONS` says how it may move.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum


class PaymentStatus(StrEnum):
    """Where a payment stands, as clients read it."""

    PENDING = "PENDING"  # an operation on it is in flight at the gateway (see `in_flight`)
    SUCCESS = "SUCCESS"  # money taken
    FAILED = "FAILED"  # charge or authorization refused; the trip can be charged again
    AUTHORIZED = "AUTHORIZED"  # money held, to be captured or voided
    VOIDED = "VOIDED"  # hold released; nothing taken; the trip can be charged again
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


class TransactionKind(StrEnum):
    """What one money operation of a payment did."""

    AUTHORIZE = "AUTHORIZE"  # place a hold
    CAPTURE = "CAPTURE"  # take (part of) a hold
    PURCHASE = "PURCHASE"  # a charge in one step (a retry of a charge is another PURCHASE)
    VOID = "VOID"  # release a hold (asked for, or after HOLD_TTL)
    REFUND = "REFUND"
    CHARGEBACK = "CHARGEBACK"  # a dispute lost at the card network (gateway events, issue 31)


class TransactionStatus(StrEnum):
    """Where one transaction stands: recorded before the gateway is called, settled once."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class HoldAction(StrEnum):
    """Which hold operation a PENDING hold is waiting for (the payments.hold_action column)."""

    CAPTURE = "capture"
    VOID = "void"
    EXPIRE = "expire"  # a void reconciliation started because the hold outlived HOLD_TTL


class GatewayStatus(StrEnum):
    """What a gateway says of a payment or refund: its words, mapped to ours by the functions below."""

    SUCCESS = "SUCCESS"  # taken (a refund: given back)
    AUTHORIZED = "AUTHORIZED"  # held
    FAILED = "FAILED"  # refused
    PENDING = "PENDING"  # undecided, or no answer
    VOIDED = "VOIDED"  # released
    ABSENT = "ABSENT"  # the gateway holds no money movement for it


P = PaymentStatus
# Every allowed change of a payment's status; a row is inserted PENDING (or, loaded from a CSV, in any
# of LOADABLE). The database refuses any other UPDATE of payments.status (trigger of migration 0011).
TRANSITIONS: frozenset[tuple[PaymentStatus, PaymentStatus]] = frozenset(
    {
        (P.PENDING, P.SUCCESS),  # charged, or a hold captured
        (P.PENDING, P.FAILED),  # refused, or unknown to the gateway
        (P.PENDING, P.AUTHORIZED),  # hold placed, or a capture/void refused (the hold stands)
        (P.PENDING, P.VOIDED),  # hold released
        (P.AUTHORIZED, P.PENDING),  # capture or void sent (or started after HOLD_TTL)
        (P.SUCCESS, P.PARTIALLY_REFUNDED),
        (P.SUCCESS, P.REFUNDED),
        (P.PARTIALLY_REFUNDED, P.REFUNDED),
        # A refund the gateway refused stops counting: the payment goes back.
        (P.PARTIALLY_REFUNDED, P.SUCCESS),
        (P.REFUNDED, P.PARTIALLY_REFUNDED),
        (P.REFUNDED, P.SUCCESS),
    }
)

# Statuses a CSV row may be loaded in (it has no gateway, so it cannot be a hold).
LOADABLE = (P.SUCCESS, P.PENDING, P.FAILED, P.REFUNDED, P.PARTIALLY_REFUNDED)
# Statuses that hold the trip: at most one payment per trip is in one of them (a unique index).
ENDED_WITHOUT_MONEY = (P.FAILED, P.VOIDED)
LIVE = tuple(status for status in P if status not in ENDED_WITHOUT_MONEY)
# Money was taken: refundable while something is left, has a receipt, counts as revenue.
TAKEN = (P.SUCCESS, P.PARTIALLY_REFUNDED, P.REFUNDED)
REFUNDABLE = (P.SUCCESS, P.PARTIALLY_REFUNDED)
RECEIPTABLE = TAKEN
REVENUE = TAKEN
# Only a hold that stands can be captured or voided.
HOLD_OPERABLE = (P.AUTHORIZED,)
# Kinds whose SUCCEEDED amounts make up a taken payment's `amount` (the ledger invariant of section 13).
MONEY_IN = (TransactionKind.PURCHASE, TransactionKind.CAPTURE)
# The transaction kind a hold action records.
HOLD_ACTION_KIND = {
    HoldAction.CAPTURE: TransactionKind.CAPTURE,
    HoldAction.VOID: TransactionKind.VOID,
    HoldAction.EXPIRE: TransactionKind.VOID,
}
# What each hold action leaves when the gateway does it.
HOLD_ACTION_DONE = {HoldAction.CAPTURE: P.SUCCESS, HoldAction.VOID: P.VOIDED, HoldAction.EXPIRE: P.VOIDED}

# Why a hold operation is refused in each status: the end of a "Payment 7 is X; only an AUTHORIZED
# hold can be captured" sentence.
WHY_NOT_HOLD_OPERABLE = {
    P.PENDING: ": a capture, void or release of it (or its authorization) is in progress; GET the payment to"
    " see how it ends.",
    P.VOIDED: ": its hold was released (voided, expired after HOLD_TTL, or released at the gateway), so the trip"
    " can be charged with POST /v1/payments/charge.",
    P.FAILED: ": its authorization failed, so nothing is held.",
    P.SUCCESS: ": it was captured (or charged) already; refund it to give money back.",
    P.PARTIALLY_REFUNDED: ": it was captured (or charged) already; refund it to give money back.",
    P.REFUNDED: ": it was captured (or charged) and refunded already.",
}


def allowed(before: str, after: str) -> bool:
    """Whether a payment may go from `before` to `after` (staying put is always allowed)."""
    return before == after or (PaymentStatus(before), PaymentStatus(after)) in TRANSITIONS


def status_after_refunds(amount: Decimal, refunded: Decimal) -> PaymentStatus:
    """A taken payment's status given what of it counts as refunded."""
    if refunded <= 0:
        return P.SUCCESS
    return P.REFUNDED if refunded >= amount else P.PARTIALLY_REFUNDED


def transaction_status(payment_status: str) -> TransactionStatus:
    """The status of the transaction that left its payment in `payment_status` (a charge or authorization)."""
    if payment_status == P.FAILED:
        return TransactionStatus.FAILED
    if payment_status == P.PENDING:
        return TransactionStatus.PENDING
    return TransactionStatus.SUCCEEDED


def hold_action_transaction_status(action: str, payment_status: str) -> TransactionStatus:
    """The status of a capture or void transaction, given the status it left its payment in."""
    if payment_status == P.PENDING:
        return TransactionStatus.PENDING
    if payment_status == HOLD_ACTION_DONE[HoldAction(action)]:
        return TransactionStatus.SUCCEEDED
    # Refused (the hold stands), or the hold turned out released when a capture was asked for.
    return TransactionStatus.FAILED


def charge_outcome(gateway_status: str, capture: bool = True) -> PaymentStatus:
    """A gateway's answer to a charge (`capture` false: an authorization) as the payment's status."""
    if gateway_status == GatewayStatus.SUCCESS:
        return P.SUCCESS
    if gateway_status == GatewayStatus.FAILED:
        return P.FAILED
    if gateway_status == GatewayStatus.AUTHORIZED and not capture:
        return P.AUTHORIZED
    if gateway_status == GatewayStatus.VOIDED:
        # Cancelled at the gateway before any money moved.
        return P.FAILED
    # PENDING, or an answer this kind of attempt should never get (ABSENT; AUTHORIZED for a charge): look again.
    return P.PENDING


def hold_action_outcome(gateway_status: str) -> PaymentStatus:
    """A gateway's answer to a capture or void as the payment's status.

    SUCCESS (captured), VOIDED (nothing held any more), AUTHORIZED (refused: the hold stands), or PENDING.
    """
    if gateway_status == GatewayStatus.SUCCESS:
        return P.SUCCESS
    if gateway_status in (GatewayStatus.VOIDED, GatewayStatus.FAILED):
        # Released, or never held: no money was taken and none is held.
        return P.VOIDED
    if gateway_status == GatewayStatus.AUTHORIZED:
        return P.AUTHORIZED
    # PENDING, or ABSENT: the gateway cannot say (yet).
    return P.PENDING


def refund_outcome(gateway_status: str) -> TransactionStatus:
    """A gateway's answer to a refund as the refund's (and its transaction's) status."""
    if gateway_status == GatewayStatus.SUCCESS:
        return TransactionStatus.SUCCEEDED
    if gateway_status == GatewayStatus.FAILED:
        return TransactionStatus.FAILED
    return TransactionStatus.PENDING
