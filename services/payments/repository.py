"""Payments in the database: the one column list, typed reads and locks, and what settling a transaction takes.

Statements here are the ones more than one operation uses. A statement specific to one operation
lives in that operation's module, but names its columns through `PAYMENT_COLUMNS` (or
`PAYMENT_COLUMNS_OF_P` where the table is aliased `p`): SQL is assembled from these constants at
import, never from values, which always travel as %(name)s parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from models.payment import Payment
from models.states import TransactionKind, TransactionStatus
from utils.errors import PaymentNotFoundError

# Every column the services read of a payment, in the order Payment declares them.
PAYMENT_COLUMN_NAMES = (
    "payment_id",
    "trip_id",
    "rider_id",
    "driver_id",
    "amount",
    "currency",
    "method",
    "status",
    "reference",
    "amount_refunded",
    "gateway",
    "gateway_reference",
    "authorized_amount",
    "error_code",
    "created_at",
    "updated_at",
    "fare",
    "gateway_payment_method",
    "hold_action",
    "capture_amount",
    "capture_fare",
    "captured_at",
)
PAYMENT_COLUMNS = ", ".join(PAYMENT_COLUMN_NAMES)
PAYMENT_COLUMNS_OF_P = ", ".join("p." + name for name in PAYMENT_COLUMN_NAMES)

SELECT_PAYMENT = Prepared("SELECT " + PAYMENT_COLUMNS + " FROM payments WHERE payment_id = %(payment_id)s")
# Concurrent operations on one payment queue up here, so each sees what the others did.
LOCK_PAYMENT = Prepared("SELECT " + PAYMENT_COLUMNS + " FROM payments WHERE payment_id = %(payment_id)s FOR UPDATE")

# The kinds a charge or authorization attempt is recorded as, and a hold action's.
ATTEMPT_KINDS = [TransactionKind.PURCHASE.value, TransactionKind.AUTHORIZE.value]
HOLD_ACTION_KINDS = [TransactionKind.CAPTURE.value, TransactionKind.VOID.value]


def settle_params(
    payment_id: int,
    kinds: Iterable[str],
    status: TransactionStatus,
    error_code: str | None = None,
    reference: str | None = None,
    amount: Decimal | None = None,
) -> dict[str, Any]:
    """Parameters of SETTLE_OPERATION (and of the statements that embed it)."""
    return {
        "payment_id": payment_id,
        "kinds": list(kinds),
        "transaction_status": status.value,
        "transaction_error": error_code if status is TransactionStatus.FAILED else None,
        "gateway_reference": reference,
        "transaction_amount": amount,
    }


class PaymentRepository:
    """Typed reads and locks of payments."""

    def __init__(self, pool: ConnectionPool) -> None:
        """Keep the pool."""
        self.pool = pool

    def get(self, payment_id: int) -> Payment:
        """The payment, or PaymentNotFoundError."""
        with self.pool.cursor(single_statement=True) as cur:
            return self.read(cur, payment_id)

    @staticmethod
    def read(cur: Cursor, payment_id: int, lock: bool = False) -> Payment:
        """The payment in the caller's transaction (`lock`: FOR UPDATE), or PaymentNotFoundError."""
        cur.execute(LOCK_PAYMENT if lock else SELECT_PAYMENT, {"payment_id": payment_id})
        row = cur.fetchone()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        return Payment.from_row(row)
