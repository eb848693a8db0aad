"""Payments and their transactions in the database: the one column list, typed reads, locks, history rows.

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

# A transaction is recorded PENDING before the gateway is called (or SUCCEEDED when none is).
INSERT_TRANSACTION = Prepared("""
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, refund_id)
VALUES (%(payment_id)s, %(kind)s, %(transaction_status)s, %(amount)s, %(currency)s, %(gateway)s, %(refund_id)s)
""")
# Settles the payment's operation in flight of these kinds (at most one: payment_transactions_one_in_flight).
SETTLE_OPERATION = Prepared("""
UPDATE payment_transactions
   SET status = %(transaction_status)s, error_code = %(transaction_error)s,
       amount = coalesce(%(transaction_amount)s, amount),
       gateway_reference = coalesce(gateway_reference, %(gateway_reference)s), updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND kind = ANY(%(kinds)s)
""")
SETTLE_REFUND_TRANSACTION = Prepared("""
UPDATE payment_transactions
   SET status = %(transaction_status)s, error_code = %(transaction_error)s,
       gateway_reference = coalesce(gateway_reference, %(gateway_reference)s), updated_at = now()
 WHERE refund_id = %(refund_id)s AND status = 'PENDING'
""")
# The gateway's id of the operation, known before its outcome (registered before money moves).
RECORD_OPERATION_REFERENCE = Prepared("""
UPDATE payment_transactions SET gateway_reference = %(gateway_reference)s, updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND kind = ANY(%(kinds)s)
""")
SELECT_TRANSACTIONS = Prepared("""
SELECT transaction_id, payment_id, kind, status, amount, currency, gateway, gateway_reference, error_code,
       refund_id, created_at, updated_at
FROM payment_transactions
WHERE payment_id = %(payment_id)s
ORDER BY transaction_id
""")

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
    """Typed reads and locks of payments, and their transaction rows."""

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

    @staticmethod
    def add_transaction(
        cur: Cursor,
        payment: Payment,
        kind: TransactionKind,
        status: TransactionStatus,
        amount: Decimal,
        refund_id: int | None = None,
    ) -> None:
        """Record one operation of the payment, on the payment's gateway."""
        cur.execute(
            INSERT_TRANSACTION,
            {
                "payment_id": payment.payment_id,
                "kind": kind.value,
                "transaction_status": status.value,
                "amount": amount,
                "currency": payment.currency,
                "gateway": payment.gateway,
                "refund_id": refund_id,
            },
        )

    @staticmethod
    def settle_operation(cur: Cursor, params: dict[str, Any]) -> None:
        """Settle the payment's operation in flight (params from `settle_params`)."""
        cur.execute(SETTLE_OPERATION, params)

    def transactions(self, payment_id: int) -> list[dict[str, Any]]:
        """The payment's transactions, oldest first (PaymentNotFoundError for an unknown payment)."""
        with self.pool.cursor() as cur:
            self.read(cur, payment_id)
            cur.execute(SELECT_TRANSACTIONS, {"payment_id": payment_id})
            return cur.fetchall()
