"""Stripe PaymentIntents through the official `stripe` SDK (`GATEWAY=stripe`).

Money moves only on a reference the database already holds: `register` creates the PaymentIntent
unconfirmed (no money moves) and the charge records its id; only then does `authorize` confirm it.
Every request carries an idempotency key derived from the payment or refund id, so Stripe answers a
repeated call with the first one's result. The SDK's own retries are off: an unanswered call is
reported as `GatewayUnavailableError`, and the payment waits for reconciliation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

import stripe

from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    PENDING,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayRefund,
    GatewayRefusedError,
    GatewayResult,
    GatewayUnavailableError,
)
from services.gateways.stripe.units import stripe_decimals
from utils.logger import get_logger

logger = get_logger(__name__)

INTENT_STATUSES = {
    "succeeded": SUCCESS,
    "requires_capture": AUTHORIZED,
    "processing": PENDING,
    "canceled": VOIDED,
    # Confirmation was never asked for: no money has moved for this PaymentIntent.
    "requires_confirmation": ABSENT,
}
# Failed and canceled refunds gave nothing back; any status not known here is read as undecided.
STRIPE_REFUND_STATUSES = {"succeeded": SUCCESS, "failed": FAILED, "canceled": FAILED}
# Errors by which Stripe says no (nothing moved); every other error leaves the outcome unknown.
REFUSALS = (stripe.CardError, stripe.InvalidRequestError, stripe.AuthenticationError, stripe.PermissionError)


class UnpayableAmountError(GatewayRefusedError):
    """The amount cannot be expressed in the currency's smallest unit at Stripe."""


def minor_units(amount: Decimal, currency: str) -> int:
    """The amount in Stripe's smallest unit of the currency: 31.25 INR -> 3125, 500 JPY -> 500."""
    scaled = amount.scaleb(stripe_decimals(currency))
    if scaled != scaled.to_integral_value():
        raise UnpayableAmountError(f"{amount} {currency} has more decimals than {currency} allows at Stripe")
    return int(scaled)


def from_minor_units(units: int, currency: str) -> Decimal:
    """An amount in Stripe's smallest unit of the currency as an amount of it: 3125 INR -> 31.25."""
    return Decimal(units).scaleb(-stripe_decimals(currency))


def _mapped_error_code(*codes: str | None) -> str:
    """The contract's error code for Stripe's codes: CARD_DECLINED, INSUFFICIENT_FUNDS, else GATEWAY_ERROR."""
    if "insufficient_funds" in codes:
        return "INSUFFICIENT_FUNDS"
    if "card_declined" in codes:
        return "CARD_DECLINED"
    return "GATEWAY_ERROR"


def error_code_of(error: stripe.StripeError) -> str:
    """The contract's error code for a card error raised by the SDK."""
    details = error.error.to_dict() if error.error else {}
    return _mapped_error_code(error.code, details.get("decline_code"))


def _intent_result(intent: Any) -> GatewayResult:
    """A PaymentIntent as a gateway answer."""
    status = intent["status"]
    if status == "requires_payment_method":
        error = intent.get("last_payment_error")
        if error:
            return GatewayResult(FAILED, _mapped_error_code(error.get("code"), error.get("decline_code")), intent["id"])
        return GatewayResult(ABSENT, reference=intent["id"])
    if status == "requires_action":
        # The card wants the rider to authenticate, and the rider is not here: the charge cannot complete.
        return GatewayResult(FAILED, "GATEWAY_ERROR", intent["id"])
    received = intent.get("amount_received")
    captured = None
    if status == "succeeded" and isinstance(received, int) and received > 0 and intent.get("currency"):
        captured = from_minor_units(received, str(intent["currency"]).upper())
    return GatewayResult(INTENT_STATUSES.get(status, PENDING), reference=intent["id"], captured=captured)


def _refund_result(refund: Any) -> GatewayResult:
    """A Stripe refund as a gateway answer: failed and canceled refunds gave nothing back."""
    return GatewayResult(STRIPE_REFUND_STATUSES.get(refund.get("status"), PENDING), reference=refund["id"])


class StripeGateway:
    """PaymentIntents: register (create unconfirmed), authorize (confirm), capture, void (cancel), refund."""

    name: ClassVar[str] = "stripe"
    needs_payment_method: ClassVar[bool] = True

    def __init__(self, api_key: str, api_base: str | None = None, timeout: float = 10.0) -> None:
        """A client of its own (not the SDK's global one), with bounded timeouts and no automatic retries."""
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            http_client=stripe.RequestsClient(timeout=timeout),
            max_network_retries=0,
        )
        # The SDK logs every request at INFO with its own format; ours say what matters.
        logging.getLogger("stripe").setLevel(logging.WARNING)

    def _send(self, what: str, call: Callable[[], Any], prefix: str | None = None) -> Any:
        """Make one call and return Stripe's object as a dict.

        Only Stripe's explicit refusals (REFUSALS) are raised as they are. Anything else, from a
        timeout, a 5xx or a dropped connection to an answer that cannot be read or is not the object
        asked for (its id not starting with `prefix`), is GatewayUnavailableError: Stripe may have acted.
        """
        try:
            answer = call()
        except REFUSALS:
            raise
        except stripe.StripeError as exc:
            raise GatewayUnavailableError(f"stripe {what}: HTTP {exc.http_status}: {exc.user_message or exc}") from exc
        # Plain dicts from here on: the SDK's objects refuse dict methods such as get().
        answer = answer.to_dict() if isinstance(answer, stripe.StripeObject) else answer
        if prefix is not None and not str((answer or {}).get("id", "")).startswith(prefix):
            raise GatewayUnavailableError(f"stripe {what}: an answer that is not a {prefix}... object")
        return answer

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        """Whether the amount is a whole number of the currency's smallest unit at Stripe."""
        try:
            minor_units(amount, currency)
        except UnpayableAmountError:
            return False
        return True

    def register(self, charge: GatewayCharge) -> str | None:
        """Create the PaymentIntent unconfirmed and return its id; no money moves."""
        params: dict[str, Any] = {
            "amount": minor_units(charge.amount, charge.currency),
            "currency": charge.currency.lower(),
            "payment_method_types": ["card"],
            "capture_method": "automatic" if charge.capture else "manual",
            "metadata": {"payment_id": str(charge.payment_id), "trip_id": str(charge.trip_id)},
        }
        if charge.payment_method:
            params["payment_method"] = charge.payment_method
        options = {"idempotency_key": f"{charge.idempotency_key}-create"}
        try:
            intent = self._send(
                "create", lambda: self._client.v1.payment_intents.create(params=params, options=options), "pi_"
            )
        except stripe.CardError as exc:
            raise GatewayRefusedError(str(exc), error_code_of(exc)) from exc
        except REFUSALS as exc:
            raise GatewayRefusedError(f"stripe refused the PaymentIntent: {exc.user_message or exc}") from exc
        return intent["id"]

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        """Confirm the registered PaymentIntent: the money moves (or is held) here, once."""
        reference = _required_reference(charge)
        options = {"idempotency_key": f"{charge.idempotency_key}-confirm"}
        try:
            intent = self._send("confirm", lambda: self._client.v1.payment_intents.confirm(reference, options=options))
        except stripe.CardError as exc:
            return GatewayResult(FAILED, error_code_of(exc), reference)
        except REFUSALS as exc:
            logger.error("stripe refused the confirmation", extra={"payment_id": charge.payment_id, "error": str(exc)})
            return self._settled_or(charge, GatewayResult(FAILED, "GATEWAY_ERROR", reference))
        return _intent_result(intent)

    def _settled_or(self, charge: GatewayCharge, refusal: GatewayResult) -> GatewayResult:
        """What Stripe says of a PaymentIntent a call was refused on (it may be settled already), else `refusal`."""
        current = self.retrieve(charge)
        return refusal if current.status == ABSENT else current

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        """Capture `amount` of the hold; Stripe releases the rest."""
        reference = _required_reference(charge)
        params = {"amount_to_capture": minor_units(amount, charge.currency)}
        options = {"idempotency_key": f"{charge.idempotency_key}-capture"}
        try:
            intent = self._send(
                "capture",
                lambda: self._client.v1.payment_intents.capture(reference, params=params, options=options),
            )
        except REFUSALS as exc:
            logger.error("stripe refused the capture", extra={"payment_id": charge.payment_id, "error": str(exc)})
            # Where the PaymentIntent stands decides: still held, captured already, or cancelled.
            return self._settled_or(charge, GatewayResult(FAILED, "GATEWAY_ERROR", reference))
        return _intent_result(intent)

    def void(self, charge: GatewayCharge) -> GatewayResult:
        """Cancel the PaymentIntent, releasing a hold."""
        reference = _required_reference(charge)
        options = {"idempotency_key": f"{charge.idempotency_key}-void"}
        try:
            intent = self._send("cancel", lambda: self._client.v1.payment_intents.cancel(reference, options=options))
        except REFUSALS as exc:
            logger.error("stripe refused the cancellation", extra={"payment_id": charge.payment_id, "error": str(exc)})
            return self._settled_or(charge, GatewayResult(FAILED, "GATEWAY_ERROR", reference))
        return _intent_result(intent)

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        """The PaymentIntent now; ABSENT when none was recorded or Stripe has none by that id."""
        if charge.reference is None:
            return GatewayResult(ABSENT)
        reference = charge.reference
        try:
            intent = self._send("retrieve", lambda: self._client.v1.payment_intents.retrieve(reference), "pi_")
        except REFUSALS as exc:
            if exc.http_status == 404:
                return GatewayResult(ABSENT)
            raise GatewayUnavailableError(f"stripe retrieve: {exc}") from exc
        return _intent_result(intent)

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        """Refund part of the payment's PaymentIntent; Stripe refusing it (or an amount it cannot carry) is FAILED."""
        try:
            units = minor_units(refund.amount, refund.payment.currency)
        except UnpayableAmountError as exc:
            logger.warning("refund not sent", extra={"refund_id": refund.refund_id, "error": str(exc)})
            return GatewayResult(FAILED, exc.error_code)
        params = {
            "payment_intent": _required_reference(refund.payment),
            "amount": units,
            "metadata": {"refund_id": str(refund.refund_id), "payment_id": str(refund.payment.payment_id)},
        }
        options = {"idempotency_key": refund.idempotency_key}
        try:
            created = self._send(
                "refund", lambda: self._client.v1.refunds.create(params=params, options=options), "re_"
            )
        except REFUSALS as exc:
            logger.warning(
                "stripe refused the refund",
                extra={"payment_id": refund.payment.payment_id, "refund_id": refund.refund_id, "error": str(exc)},
            )
            return GatewayResult(FAILED, "GATEWAY_ERROR")
        return _refund_result(created)

    def retrieve_refund(self, refund: GatewayRefund) -> GatewayResult:
        """The refund now, found by its id or else by its `refund_id` among the PaymentIntent's refunds."""
        if refund.reference is not None:
            reference = refund.reference
            try:
                found = self._send("retrieve refund", lambda: self._client.v1.refunds.retrieve(reference), "re_")
            except REFUSALS as exc:
                if exc.http_status == 404:
                    return GatewayResult(ABSENT)
                raise GatewayUnavailableError(f"stripe retrieve refund: {exc}") from exc
            return _refund_result(found)
        if refund.payment.reference is None:
            return GatewayResult(ABSENT)
        params = {"payment_intent": refund.payment.reference, "limit": 100}
        try:
            listed = self._send("list refunds", lambda: self._client.v1.refunds.list(params=params))
        except REFUSALS as exc:
            if exc.http_status == 404:
                return GatewayResult(ABSENT)
            raise GatewayUnavailableError(f"stripe list refunds: {exc}") from exc
        for found in listed["data"]:
            if (found.get("metadata") or {}).get("refund_id") == str(refund.refund_id):
                return _refund_result(found)
        return GatewayResult(ABSENT)


def _required_reference(charge: GatewayCharge) -> str:
    """The PaymentIntent id; calling without one is a programming error, not a gateway answer."""
    if charge.reference is None:
        raise ValueError(f"payment {charge.payment_id} has no PaymentIntent recorded")
    return charge.reference
