"""Receipts: generated once per payment (a unique constraint decides races), then always the same."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from database.pool import ConnectionPool
from database.prepared import Prepared
from models.payment import Payment
from models.receipt import Receipt
from models.refund import Refund
from models.states import RECEIPTABLE
from services.clients.profiles import ProfileClient
from services.notification_service import Outbox
from services.payments.repository import SELECT_PAYMENT
from utils.errors import DomainError, PaymentNotFoundError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import RECEIPTS

logger = get_logger(__name__)

# The payment row, its receipt and its refunds must be read from one snapshot: under READ COMMITTED
# each statement sees the latest commit, so a refund landing in between would list a refund that
# the payment's totals do not count yet (found by trying receipts during concurrent refunds).
ONE_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
SELECT_RECEIPT = Prepared("""
SELECT receipt_id, receipt_number, payment_id, receipt_data, generated_at
FROM payment_receipts
WHERE payment_id = %(payment_id)s
""")
SELECT_REFUNDS = Prepared("""
SELECT refund_id, refund_amount, reason, status, created_at
FROM payment_refunds
WHERE payment_id = %(payment_id)s AND status <> 'FAILED'
ORDER BY created_at, refund_id
""")
# Simultaneous first requests all try and exactly one row gets in. The row has two unique keys,
# payment_id and receipt_number, and a loser can collide on either: ON CONFLICT (payment_id) would
# arbitrate only the first and let the other raise. Both keys are functions of the payment (the
# number embeds its id), so any conflict means "this payment's receipt exists": no target.
INSERT_RECEIPT = Prepared("""
INSERT INTO payment_receipts (payment_id, receipt_number, receipt_data, generated_at)
VALUES (%(payment_id)s, %(receipt_number)s, %(receipt_data)s, %(generated_at)s)
ON CONFLICT DO NOTHING
RETURNING receipt_id, receipt_number, payment_id, receipt_data, generated_at
""")


class ReceiptUnavailableError(DomainError):
    """FAILED and PENDING payments have nothing to give a receipt for."""

    code = "receipt_unavailable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status."""
        super().__init__(
            f"Payment {payment_id} is {status}; receipts exist only for completed payments.",
            payment_id=payment_id,
            payment_status=status,
        )


def receipt_number(payment_id: int, moment: datetime) -> str:
    """A readable, unique receipt number, e.g. RCPT-20251103-00000353 (one receipt per payment)."""
    return f"RCPT-{moment:%Y%m%d}-{payment_id:08d}"


@dataclass(frozen=True, slots=True)
class ReceiptView:
    """A receipt as one request sees it: the stored receipt, and the payment and refunds as of now."""

    receipt: Receipt
    payment: Payment
    refunds: list[Refund]

    def to_json(self) -> dict[str, Any]:
        """The contract's receipt: receipt_number and generated_at never change; state and refunds are current."""
        data = dict(self.receipt.snapshot)
        data["payment"] = self.payment.to_json()
        data["refunds"] = [refund.to_json() for refund in self.refunds]
        data["totals"] = {
            "amount": self.payment.amount,
            "refunded": self.payment.amount_refunded,
            "net": self.payment.remaining,
        }
        if self.payment.authorized_amount is not None:
            # A captured hold: what was held at the trip's start, and what its end took.
            data["hold"] = {
                "authorized_amount": self.payment.authorized_amount,
                "captured_amount": self.payment.amount,
                "authorized_at": self.payment.created_at,
                # The day it was paid; null for a capture recorded before captured_at existed.
                "captured_at": self.payment.captured_at,
            }
        return self.receipt.to_json(data)


class ReceiptService:
    """Builds, stores and returns receipts."""

    def __init__(self, pool: ConnectionPool, profiles: ProfileClient, outbox: Outbox) -> None:
        """Keep the pool, the rider/driver lookup and the outbox."""
        self.pool = pool
        self.profiles = profiles
        self.outbox = outbox

    def get_receipt(self, payment_id: int) -> ReceiptView:
        """Return the payment's receipt, creating it on first request; refunds are as of now."""
        payment, receipt, refunds = self._read(payment_id)
        if receipt is None:
            receipt = self._create(payment)
        return ReceiptView(receipt, payment, refunds)

    def check_receiptable(self, payment_id: int) -> None:
        """Raise what get_receipt would (not found, unavailable), without issuing a receipt."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
            row = cur.fetchone()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        if row["status"] not in RECEIPTABLE:
            raise ReceiptUnavailableError(payment_id, row["status"])

    def _read(self, payment_id: int) -> tuple[Payment, Receipt | None, list[Refund]]:
        """Read the payment, its receipt (if any) and its refunds in one transaction and one snapshot."""
        with self.pool.cursor() as cur:
            cur.execute(ONE_SNAPSHOT)
            cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
            row = cur.fetchone()
            if row is None:
                raise PaymentNotFoundError(payment_id)
            payment = Payment.from_row(row)
            if payment.status not in RECEIPTABLE:
                raise ReceiptUnavailableError(payment.payment_id, payment.status)
            cur.execute(SELECT_RECEIPT, {"payment_id": payment_id})
            stored = cur.fetchone()
            cur.execute(SELECT_REFUNDS, {"payment_id": payment_id})
            refunds = [Refund.from_row(row) for row in cur.fetchall()]
        return payment, None if stored is None else Receipt.from_row(stored), refunds

    def _create(self, payment: Payment) -> Receipt:
        """Store the first receipt (or find the one a concurrent request stored first)."""
        generated_at = datetime.now(UTC)
        snapshot = {
            "service": "payment-service",
            "currency": payment.currency,
            "fare": payment.fare,
            "rider": self._rider(payment.rider_id),
            "driver": self._driver(payment.driver_id),
        }
        params = {
            "payment_id": payment.payment_id,
            "receipt_number": receipt_number(payment.payment_id, generated_at),
            "receipt_data": dump_json(snapshot),
            "generated_at": generated_at,
        }
        with self.pool.cursor() as cur:
            cur.execute(INSERT_RECEIPT, params)
            created = cur.fetchone()
            if created is None:
                cur.execute(SELECT_RECEIPT, params)
                return Receipt.from_row(cur.fetchone())
            receipt = Receipt.from_row(created)
            # Same transaction as the receipt: announced exactly when it exists.
            self.outbox.add(
                cur,
                {
                    "notification_id": f"receipt-{receipt.receipt_id}",
                    "type": "receipt",
                    "payment_id": payment.payment_id,
                    "receipt_number": receipt.receipt_number,
                    "trip_id": payment.trip_id,
                    "rider_id": payment.rider_id,
                    "driver_id": payment.driver_id,
                    "status": payment.status,
                    "amount": payment.amount,
                    "currency": payment.currency,
                    "timestamp": generated_at,
                },
            )
        RECEIPTS.inc()
        self.outbox.wake()
        logger.info("receipt generated", extra={"payment_id": payment.payment_id, "receipt_id": receipt.receipt_id})
        return receipt

    def _rider(self, rider_id: int | None) -> dict[str, Any] | None:
        """Rider details from the rider service, falling back to the bare id."""
        if rider_id is None:
            return None
        return {**(self.profiles.get_rider(rider_id) or {}), "rider_id": rider_id}

    def _driver(self, driver_id: int | None) -> dict[str, Any] | None:
        """Driver details from the driver service, falling back to the bare id."""
        if driver_id is None:
            return None
        return {**(self.profiles.get_driver(driver_id) or {}), "driver_id": driver_id}
