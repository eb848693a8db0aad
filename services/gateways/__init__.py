"""Payment gateways: the one interface every money movement goes through, and what a gateway answers.

Each gateway is a package of its own (`simulator/`, `stripe/`) exposing a `GatewayKind`: how to build
it from the settings. `registry.py` lists the kinds in one table and builds, once per process, every
gateway whose settings are present; `GATEWAY` names the one new payments use. Every call carries an
idempotency key of the gateway's own, derived from the payment or refund id, so a repeated call never
moves money twice.

Outcomes are reported, not raised: a card that is refused is a `GatewayResult` with status FAILED.
Only "the gateway did not answer" (timeout, 5xx, dropped connection) is raised, as
`GatewayUnavailableError`, because then the outcome is unknown and the caller must leave the payment
PENDING for reconciliation; it must never be read as a refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar, Protocol

from utils.errors import DomainError

if TYPE_CHECKING:
    from config import Config
    from database.pool import ConnectionPool

GATEWAY_ERROR_CODES = ("INSUFFICIENT_FUNDS", "CARD_DECLINED", "GATEWAY_ERROR")
# The error code of a PENDING payment the gateway has never heard of, settled as FAILED.
NO_RECORD = "GATEWAY_NO_RECORD"

# What a gateway says of a payment: taken (SUCCESS), held (AUTHORIZED), refused (FAILED), undecided
# (PENDING), released (VOIDED), or ABSENT: the gateway holds no money movement for it (never heard
# of it, or registered it and was never asked to move the money).
SUCCESS = "SUCCESS"
AUTHORIZED = "AUTHORIZED"
FAILED = "FAILED"
PENDING = "PENDING"
VOIDED = "VOIDED"
ABSENT = "ABSENT"


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """A gateway's answer: one of the statuses above, an error code when FAILED, its transaction id.

    `answered` is False for a PENDING that only means "the gateway did not answer". `captured` is
    what a SUCCESS took, when the gateway says (a hold may have been captured for less).
    """

    status: str
    error_code: str | None = None
    reference: str | None = None
    answered: bool = True
    captured: Decimal | None = None


@dataclass(frozen=True, slots=True)
class GatewayCharge:
    """What a gateway needs to know of one payment; `reference` is its id there, once recorded."""

    payment_id: int
    trip_id: int
    amount: Decimal
    currency: str
    method: str
    payment_method: str | None = None
    reference: str | None = None
    capture: bool = True

    @property
    def idempotency_key(self) -> str:
        """The gateway idempotency key of this payment: the same on every call, every process."""
        return f"payment-{self.payment_id}"


@dataclass(frozen=True, slots=True)
class GatewayRefund:
    """One refund of a payment; `reference` is the gateway's id of the refund, once known."""

    refund_id: int
    payment: GatewayCharge
    amount: Decimal
    reference: str | None = None

    @property
    def idempotency_key(self) -> str:
        """The gateway idempotency key of this refund."""
        return f"refund-{self.refund_id}"


class AmountNotPayableError(DomainError):
    """The gateway cannot move an amount in the currency (e.g. cents of JPY at Stripe): nothing was written."""

    def __init__(self, what: str, verb: str, currency: str, gateway: str, advice: str, field: str | None) -> None:
        """Say which amount (`what`), what could not be done with it (`verb`), and what to do instead."""
        super().__init__(
            f"{what} cannot be {verb} in {currency} through the {gateway} gateway, which moves whole units"
            f" of {currency}'s smallest denomination only; {advice}",
            **({"field": field} if field else {}),
        )


class GatewayNotConfiguredError(DomainError):
    """A payment's gateway is not configured in this process (any more): nothing was written."""

    code = "gateway_not_configured"

    def __init__(self, gateway: str, remedy: str) -> None:
        """Name the gateway and say what would configure it (`remedy`, e.g. "set STRIPE_API_KEY")."""
        super().__init__(f"The {gateway} gateway is not configured in this service: {remedy}.", gateway=gateway)


class GatewayUnavailableError(Exception):
    """The gateway did not answer (timeout, 5xx, dropped connection): the outcome is unknown."""


class GatewayRefusedError(Exception):
    """The gateway refused to register a payment (bad token, unpayable amount): no money can have moved."""

    def __init__(self, message: str, error_code: str = "GATEWAY_ERROR") -> None:
        """Keep the contract's error code for the FAILED payment."""
        super().__init__(message)
        self.error_code = error_code


class PaymentGateway(Protocol):
    """Moves money for payments. Each method is safe to call again with the same payment or refund."""

    name: ClassVar[str]
    # True when CARD/WALLET/UPI charges need the client's gateway token (`payment_method`).
    needs_payment_method: ClassVar[bool]

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        """Whether the gateway can move exactly `amount` in `currency` (e.g. no cents in JPY at Stripe)."""
        ...

    def register(self, charge: GatewayCharge) -> str | None:
        """Make the payment known without moving money; return the reference to record before any money moves.

        None means the gateway finds the payment by its idempotency key alone (nothing to record).
        """
        ...

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        """Take the money (or hold it when `charge.capture` is false): SUCCESS, AUTHORIZED, FAILED or PENDING."""
        ...

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        """Capture `amount` of a hold and release the rest."""
        ...

    def void(self, charge: GatewayCharge) -> GatewayResult:
        """Release a hold."""
        ...

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        """What the gateway knows of the payment now (ABSENT: no money movement there)."""
        ...

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        """Give back `refund.amount`: SUCCESS, FAILED (refused) or PENDING."""
        ...

    def retrieve_refund(self, refund: GatewayRefund) -> GatewayResult:
        """What the gateway knows of the refund now."""
        ...


@dataclass(frozen=True, slots=True)
class GatewayKind:
    """One kind of gateway the service can use: what builds it, and what configures it (for messages and docs)."""

    # The gateway built from the settings, or None when they do not configure it (e.g. no API key).
    build: Callable[[Config, ConnectionPool], PaymentGateway | None]
    # What configures it, as advice to whoever finds it missing: "set STRIPE_API_KEY".
    configured_by: str
    # One phrase for GATEWAY's documentation: "embedded, its ledger in the service's database".
    about: str
