"""Reading payments: one by id, pages of the list (newest first, by offset or keyset cursor), a payment's history."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from database.pool import ConnectionPool
from database.prepared import Prepared
from models.payment import Payment
from models.refund import RefundRecord
from models.transaction import Transaction
from services.payments.repository import PAYMENT_COLUMNS, SELECT_PAYMENT
from utils.errors import PaymentNotFoundError
from utils.helpers import MAX_BIGINT

# A payment's transactions, oldest first, in one statement (one snapshot): no row at all means no such
# payment, one row of NULLs a payment without transactions (a 0.00 row of an early version). All of
# them: a payment has a handful (a charge, its retries, a hold's two steps, each refund).
SELECT_TRANSACTIONS = Prepared("""
SELECT t.transaction_id, t.payment_id, t.kind, t.status, t.amount, t.currency, t.gateway, t.gateway_reference,
       t.error_code, t.refund_id, t.created_at, t.updated_at
FROM payments AS p
LEFT JOIN payment_transactions AS t ON t.payment_id = p.payment_id
WHERE p.payment_id = %(payment_id)s
ORDER BY t.transaction_id
""")
# A payment's refund records, every status, in the order they were recorded; read like SELECT_TRANSACTIONS.
SELECT_REFUND_RECORDS = Prepared("""
SELECT r.refund_id, r.payment_id, r.refund_amount, p.currency, r.status AS refund_status, r.reason, r.gateway,
       r.gateway_reference, r.error_code, r.created_at, r.updated_at
FROM payments AS p
LEFT JOIN payment_refunds AS r ON r.payment_id = p.payment_id
WHERE p.payment_id = %(payment_id)s
ORDER BY r.refund_id
""")

# psycopg2 interpolates parameters on the client, so PostgreSQL plans this with literal values:
# "NULL::bigint IS NULL" folds to true and drops out, leaving only the given filters, which the
# (column, created_at DESC, payment_id DESC) indexes then serve without a sort. With a cursor the
# row comparison starts the index scan right after the previous page's last row, so page 50 costs
# what page 1 costs; OFFSET has to read and throw away every row before the page.
LIST_PAYMENTS = (
    "SELECT "
    + PAYMENT_COLUMNS
    + """
FROM payments
WHERE (%(trip_id)s::bigint IS NULL OR trip_id = %(trip_id)s)
  AND (%(rider_id)s::bigint IS NULL OR rider_id = %(rider_id)s)
  AND (%(driver_id)s::bigint IS NULL OR driver_id = %(driver_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(method)s::text IS NULL OR method = %(method)s)
  AND (%(after_id)s::bigint IS NULL
       OR (created_at, payment_id) < (%(after_created_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY created_at DESC, payment_id DESC
LIMIT %(fetch)s OFFSET %(offset)s
"""
)


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a page ended (the last row's sort key) and which filters it pages through. Opaque to clients."""

    created_at: datetime
    payment_id: int
    # A short digest of the filters of the page that issued it: a cursor only continues that list,
    # never another one mid-way (found by trying the service: it silently did).
    scope: str

    def encode(self) -> str:
        """URL-safe text for `next_cursor`."""
        raw = f"{self.created_at.isoformat()}|{self.payment_id}|{self.scope}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor | None:
        """The cursor `encode` made, or None if `text` is not one."""
        if not 1 <= len(text) <= 200 or not text.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            moment, number, scope = raw.split("|")
            created_at = datetime.fromisoformat(moment)
            payment_id = int(number) if number.isascii() and number.isdigit() else 0
        except (ValueError, UnicodeDecodeError):
            return None
        if created_at.tzinfo is None or not 0 < payment_id <= MAX_BIGINT or not _SCOPE_RE.fullmatch(scope):
            return None
        return cls(created_at, payment_id, scope)


_SCOPE_RE = re.compile(r"[0-9a-f]{12}")


def filter_scope(
    trip_id: int | None, rider_id: int | None, driver_id: int | None, status: str | None, method: str | None
) -> str:
    """The digest a cursor carries of the filters it belongs to."""
    text = "|".join("" if value is None else str(value) for value in (trip_id, rider_id, driver_id, status, method))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class PaymentFilters:
    """Validated filters and page of GET /v1/payments (an offset, or a cursor from the previous page)."""

    trip_id: int | None = None
    rider_id: int | None = None
    driver_id: int | None = None
    status: str | None = None
    method: str | None = None
    limit: int = 100
    offset: int = 0
    after: PageCursor | None = None

    def scope(self) -> str:
        """The digest of these filters (what a cursor of this list carries)."""
        return filter_scope(self.trip_id, self.rider_id, self.driver_id, self.status, self.method)


@dataclass(frozen=True, slots=True)
class PaymentPage:
    """One page of the list and where the next one starts."""

    payments: list[Payment]
    limit: int
    offset: int
    has_more: bool
    next_cursor: PageCursor | None

    def to_json(self) -> dict[str, Any]:
        """The contract's list answer."""
        return {
            "payments": [payment.to_json() for payment in self.payments],
            "count": len(self.payments),
            "limit": self.limit,
            "offset": self.offset,
            "has_more": self.has_more,
            "next_cursor": self.next_cursor.encode() if self.next_cursor else None,
        }


@dataclass(frozen=True, slots=True)
class TransactionList:
    """A payment's transactions, oldest first."""

    payment_id: int
    transactions: list[Transaction]

    def to_json(self) -> dict[str, Any]:
        """The answer of GET /v1/payments/<id>/transactions."""
        return {"payment_id": self.payment_id, "transactions": [t.to_json() for t in self.transactions]}


@dataclass(frozen=True, slots=True)
class RefundList:
    """A payment's refund records, oldest first."""

    payment_id: int
    refunds: list[RefundRecord]

    def to_json(self) -> dict[str, Any]:
        """The answer of GET /v1/payments/<id>/refunds."""
        return {"payment_id": self.payment_id, "refunds": [refund.to_json() for refund in self.refunds]}


class PaymentQueries:
    """Reads payments; each read is one statement."""

    def __init__(self, pool: ConnectionPool) -> None:
        """Keep the pool."""
        self.pool = pool

    def get_payment(self, payment_id: int) -> Payment:
        """Return one payment or raise PaymentNotFoundError."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
            row = cur.fetchone()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        return Payment.from_row(row)

    def get_transactions(self, payment_id: int) -> TransactionList:
        """Return every transaction of the payment, oldest first, or raise PaymentNotFoundError."""
        rows = self._rows_of_payment(SELECT_TRANSACTIONS, payment_id)
        found = [Transaction.from_row(row) for row in rows if row["transaction_id"] is not None]
        return TransactionList(payment_id, found)

    def get_refunds(self, payment_id: int) -> RefundList:
        """Return every refund record of the payment (FAILED ones too), oldest first, or raise PaymentNotFoundError."""
        rows = self._rows_of_payment(SELECT_REFUND_RECORDS, payment_id)
        return RefundList(payment_id, [RefundRecord.from_row(row) for row in rows if row["refund_id"] is not None])

    def _rows_of_payment(self, statement: Prepared, payment_id: int) -> list[dict[str, Any]]:
        """Rows of a statement joining the payment to its records; raise PaymentNotFoundError when it has none."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(statement, {"payment_id": payment_id})
            rows = cur.fetchall()
        if not rows:
            raise PaymentNotFoundError(payment_id)
        return rows

    def list_payments(self, filters: PaymentFilters) -> PaymentPage:
        """Return one page of payments, newest first, whether more follow, and the cursor of the next page."""
        after = filters.after
        params = {
            **{f.name: getattr(filters, f.name) for f in dataclasses.fields(filters) if f.name != "after"},
            "after_created_at": after.created_at if after else None,
            "after_id": after.payment_id if after else None,
            "fetch": filters.limit + 1,
        }
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(LIST_PAYMENTS, params)
            rows = cur.fetchall()
        has_more = len(rows) > filters.limit
        payments = [Payment.from_row(row) for row in rows[: filters.limit]]
        last = payments[-1] if has_more else None
        return PaymentPage(
            payments=payments,
            limit=filters.limit,
            offset=filters.offset,
            has_more=has_more,
            next_cursor=PageCursor(last.created_at, last.payment_id, filters.scope()) if last else None,
        )
