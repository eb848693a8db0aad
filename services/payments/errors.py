"""What the payment operations refuse with: each a DomainError with its code (api/errors.py maps it)."""

from __future__ import annotations

from decimal import Decimal

from models.money import plain_amount
from models.payment import Payment
from models.states import WHY_NOT_HOLD_OPERABLE
from services.clients.trips import Trip
from services.gateways import AmountNotPayableError
from utils.errors import DomainError

# --- charges and holds ---------------------------------------------------------------------------


class HoldNotSupportedError(DomainError):
    """CASH cannot be held: there is no gateway to hold it at."""

    code = "hold_not_supported"

    def __init__(self) -> None:
        """Say so naming the field."""
        super().__init__(
            "method CASH cannot be authorized: cash is paid in the car, so there is nothing to hold; charge the"
            " trip with POST /v1/payments/charge when it ends.",
            field="method",
        )


class ChargeAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot move the charge's amount in the currency (never sent, so never a gateway failure)."""

    code = "charge_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str, hold: bool, explicit: bool) -> None:
        """Say which amount and why; `field` only when the caller sent it."""
        super().__init__(
            f"amount {amount}" if explicit else f"The fare {amount}",
            "held" if hold else "charged",
            currency,
            gateway,
            "give an amount it can carry." if explicit else "charge an amount it can carry.",
            "amount" if explicit else None,
        )


class HoldAmountNotPayableError(ChargeAmountNotPayableError):
    """The gateway cannot hold the amount in the currency."""

    code = "hold_amount_not_payable"


class TripNotHoldableError(DomainError):
    """The trip has ended (or is in a state a hold makes no sense for)."""

    code = "trip_not_holdable"

    def __init__(self, trip: Trip) -> None:
        """Say so with the trip's id and status."""
        super().__init__(
            f"Trip {trip.trip_id} is {trip.status}; a hold can be placed only on a REQUESTED, ACCEPTED or ONGOING"
            " trip (charge an ended trip with POST /v1/payments/charge).",
            trip_id=trip.trip_id,
            trip_status=trip.status,
        )


class PaymentMethodRequiredError(DomainError):
    """The configured gateway needs the rider's payment method token for this method."""

    code = "payment_method_required"

    def __init__(self, method: str, gateway: str) -> None:
        """Say which field is missing and why."""
        super().__init__(
            f"payment_method is required for {method} with the {gateway} gateway: give the gateway's token"
            " of the rider's payment method (for example pm_card_visa in Stripe's test mode).",
            field="payment_method",
        )


class TripNotCompletedError(DomainError):
    """The trip is neither completed nor cancelled, so there is nothing to charge yet."""

    code = "trip_not_completed"

    def __init__(self, trip: Trip, verb: str = "charged") -> None:
        """Say so with the trip's id and status (`verb`: what cannot be done yet, charged or captured)."""
        super().__init__(
            f"Trip {trip.trip_id} is {trip.status}; only COMPLETED or CANCELLED trips can be {verb}.",
            trip_id=trip.trip_id,
            trip_status=trip.status,
        )


class TripPartyMismatchError(DomainError):
    """The body names a rider or driver other than the one the trip service gives for the trip."""

    code = "trip_party_mismatch"

    def __init__(self, trip_id: int, field: str, given: int, expected: int, source: str = "given") -> None:
        """Say so naming the field and both ids (`source`: whose id disagrees, the body's or the hold's)."""
        if source == "held":
            what = f"The hold's {field} {given}"
            after = "nothing was captured and the hold stands"
        else:
            what, after = f"{field} {given}", "nothing was charged"
        super().__init__(
            f"{what} does not match trip {trip_id}, whose {field} is {expected}; {after}.",
            field=field,
            trip_id=trip_id,
        )


class TripAlreadyPaidError(DomainError):
    """The trip already has a payment that is not FAILED."""

    code = "trip_already_paid"

    def __init__(self, trip_id: int, payment_id: int) -> None:
        """Say so naming the existing payment."""
        super().__init__(
            f"Trip {trip_id} already has payment {payment_id}.",
            trip_id=trip_id,
            payment_id=payment_id,
        )


# --- capture and void ----------------------------------------------------------------------------


def why_not(status: str) -> str:
    """The end of a not-capturable / not-voidable sentence: what the status means for the caller."""
    return WHY_NOT_HOLD_OPERABLE.get(status, ".")


class PaymentNotCapturableError(DomainError):
    """Only an AUTHORIZED payment can be captured."""

    code = "payment_not_capturable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status, and what it means for the caller."""
        super().__init__(
            f"Payment {payment_id} is {status}; only an AUTHORIZED hold can be captured{why_not(status)}",
            payment_id=payment_id,
            payment_status=status,
        )


class PaymentNotVoidableError(DomainError):
    """Only an AUTHORIZED payment can be voided."""

    code = "payment_not_voidable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status, and what it means for the caller."""
        super().__init__(
            f"Payment {payment_id} is {status}; only an AUTHORIZED hold can be voided{why_not(status)}",
            payment_id=payment_id,
            payment_status=status,
        )


class CaptureExceedsAuthorizationError(DomainError):
    """The final fare is more than the hold; nothing changed."""

    code = "capture_exceeds_authorization"

    def __init__(self, payment_id: int, authorized: Decimal, fare: Decimal, explicit: bool = False) -> None:
        """Give both amounts, and the way out."""
        what = f"amount {fare}" if explicit else f"final fare {fare}"
        super().__init__(
            f"The {what} is more than the {authorized} held on payment {payment_id}; nothing was"
            f" captured and the hold stands. Capture an explicit amount of at most {authorized}, or void the hold"
            " and charge the trip.",
            payment_id=payment_id,
            authorized_amount=authorized,
            fare=fare,
        )


class CaptureAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot capture the amount in the payment's currency."""

    code = "capture_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str, explicit: bool) -> None:
        """Say which amount and why; `field` only when the caller sent it."""
        super().__init__(
            f"amount {amount}" if explicit else f"The final fare {amount}",
            "captured",
            currency,
            gateway,
            "capture an explicit amount it can carry. The hold stands.",
            "amount" if explicit else None,
        )


class GatewayHoldActionFailedError(DomainError):
    """The gateway refused the capture or void; the payment is as `payment_status` says."""

    def __init__(self, action: str, payment: Payment) -> None:
        """Say what was refused and where the payment stands now."""
        self.code = f"gateway_{action}_failed"
        stands = {
            "AUTHORIZED": "the hold stands; retry, or void it",
            "VOIDED": "the gateway had already released the hold, so nothing was taken and the payment is now VOIDED",
            "SUCCESS": "the gateway had already captured the hold, so the payment is now SUCCESS",
        }.get(payment.status, f"the payment is now {payment.status}")
        super().__init__(
            f"The gateway refused to {action} payment {payment.payment_id}: {stands}.",
            payment_id=payment.payment_id,
            payment_status=payment.status,
        )


# --- refunds -------------------------------------------------------------------------------------


class PaymentNotRefundableError(DomainError):
    """The payment is not in a state that can be refunded."""

    code = "payment_not_refundable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status."""
        super().__init__(
            f"Payment {payment_id} is {status}; only SUCCESS or PARTIALLY_REFUNDED payments can be refunded.",
            payment_id=payment_id,
            payment_status=status,
        )


class GatewayRefundFailedError(DomainError):
    """The gateway refused the refund; it was recorded as FAILED and nothing counts as refunded."""

    code = "gateway_refund_failed"

    def __init__(self, payment_id: int, refund_id: int, error_code: str | None) -> None:
        """Say so naming the refund record."""
        super().__init__(
            f"The gateway refused refund {refund_id} of payment {payment_id}; nothing was refunded and the refund"
            " is recorded as FAILED. Retry (the same idempotency key makes a new attempt), or look the payment up"
            " at the gateway.",
            payment_id=payment_id,
            refund_id=refund_id,
            error_code=error_code,
        )


class RefundAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot move the refund's amount in the payment's currency."""

    code = "refund_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str) -> None:
        """Say which amount and why, naming the field."""
        super().__init__(f"amount {amount}", "refunded", currency, gateway, "give an amount it can carry.", "amount")


class RefundExceedsRemainingError(DomainError):
    """The requested amount is more than what is left to refund."""

    code = "refund_exceeds_remaining"

    def __init__(self, payment_id: int, requested: Decimal, remaining: Decimal, currency: str) -> None:
        """Say so with the remaining amount, in the payment's currency."""
        asked, left = plain_amount(requested, currency), plain_amount(remaining, currency)
        super().__init__(
            f"A refund of {asked} {currency} exceeds the {left} {currency} that remains refundable on payment"
            f" {payment_id}.",
            payment_id=payment_id,
            requested_amount=requested,
            remaining_amount=remaining,
        )
