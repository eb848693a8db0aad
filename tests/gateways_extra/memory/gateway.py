"""An in-memory gateway implementing `PaymentGateway`: a ledger in a dict, one entry per idempotency key."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import ClassVar

from models.money import fits_currency
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayRefund,
    GatewayResult,
)

# A payment_method this gateway declines (CARD_DECLINED); any other, or none, is approved.
DECLINED = "decline"


@dataclass(frozen=True)
class Entry:
    """What the ledger holds under one key: a verdict (None while only registered) and the amounts."""

    reference: str
    amount: Decimal
    status: str | None = None
    error_code: str | None = None
    captured: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)

    def result(self) -> GatewayResult:
        """The entry as a gateway answer (ABSENT while registered only)."""
        if self.status is None:
            return GatewayResult(ABSENT, reference=self.reference)
        captured = self.captured if self.status == SUCCESS and self.captured else None
        return GatewayResult(self.status, self.error_code, self.reference, captured=captured)


class MemoryGateway:
    """Approves every charge but those with payment_method "decline"; refunds what was captured and not refunded."""

    name: ClassVar[str] = "memory"
    needs_payment_method: ClassVar[bool] = False

    def __init__(self) -> None:
        """An empty ledger; one lock makes each call's read-and-write atomic, as a processor's would be."""
        self.ledger: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def movements(self) -> tuple[int, int]:
        """How many payments moved or held money, and how many refunds gave some back."""
        with self._lock:
            entries = list(self.ledger.items())
        payments = sum(1 for key, e in entries if key.startswith("payment-") and e.status in (SUCCESS, AUTHORIZED))
        refunds = sum(1 for key, e in entries if key.startswith("refund-") and e.status == SUCCESS)
        return payments, refunds

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        """A whole number of the currency's ISO 4217 smallest unit."""
        return fits_currency(amount, currency)

    def register(self, charge: GatewayCharge) -> str | None:
        """Record the payment without moving money; its reference is what later calls carry."""
        with self._lock:
            entry = self.ledger.setdefault(charge.idempotency_key, Entry(f"mem_{next(self._ids)}", charge.amount))
        return entry.reference

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        """Take (or hold) the money once; a second call answers the first verdict."""
        self.register(charge)
        with self._lock:
            entry = self.ledger[charge.idempotency_key]
            if entry.status is None:
                if charge.payment_method == DECLINED:
                    entry = replace(entry, status=FAILED, error_code="CARD_DECLINED")
                elif charge.capture:
                    entry = replace(entry, status=SUCCESS, captured=charge.amount)
                else:
                    entry = replace(entry, status=AUTHORIZED)
                self.ledger[charge.idempotency_key] = entry
            return entry.result()

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        """Capture `amount` of a hold; more than is held leaves the hold standing."""
        with self._lock:
            entry = self.ledger.get(charge.idempotency_key)
            if entry is None or entry.status is None:
                return GatewayResult(FAILED, "GATEWAY_ERROR")
            if entry.status == AUTHORIZED and amount <= entry.amount:
                entry = self.ledger[charge.idempotency_key] = replace(entry, status=SUCCESS, captured=amount)
            return entry.result()

    def void(self, charge: GatewayCharge) -> GatewayResult:
        """Release a hold; anything else answers where the payment stands."""
        with self._lock:
            entry = self.ledger.get(charge.idempotency_key)
            if entry is None or entry.status is None:
                return GatewayResult(FAILED, "GATEWAY_ERROR")
            if entry.status == AUTHORIZED:
                entry = self.ledger[charge.idempotency_key] = replace(entry, status=VOIDED)
            return entry.result()

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        """The payment's entry now; ABSENT when there is none, or no money moved."""
        with self._lock:
            entry = self.ledger.get(charge.idempotency_key)
        return GatewayResult(ABSENT) if entry is None else entry.result()

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        """Give back what was captured and not yet refunded, once per refund; more than that is FAILED."""
        with self._lock:
            found = self.ledger.get(refund.idempotency_key)
            if found is not None:
                return found.result()
            payment = self.ledger.get(refund.payment.idempotency_key)
            reference = f"memre_{next(self._ids)}"
            if payment is None or payment.status != SUCCESS or payment.refunded + refund.amount > payment.captured:
                entry = Entry(reference, refund.amount, FAILED, "GATEWAY_ERROR")
            else:
                entry = Entry(reference, refund.amount, SUCCESS)
                self.ledger[refund.payment.idempotency_key] = replace(
                    payment, refunded=payment.refunded + refund.amount
                )
            self.ledger[refund.idempotency_key] = entry
            return entry.result()

    def retrieve_refund(self, refund: GatewayRefund) -> GatewayResult:
        """The refund's entry now; ABSENT when there is none."""
        with self._lock:
            entry = self.ledger.get(refund.idempotency_key)
        return GatewayResult(ABSENT) if entry is None else entry.result()
