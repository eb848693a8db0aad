"""Payment business operations; each public method is one database transaction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from config import Config
from database.connection import ConnectionPool
from models.payment import payment_to_dict
from utils.errors import NotFoundError

SELECT_PAYMENT = """
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at
FROM payments
WHERE payment_id = %(payment_id)s
"""

# psycopg2 interpolates parameters on the client, so PostgreSQL plans this with literal values:
# "NULL::bigint IS NULL" folds to true and drops out, leaving only the given filters, which the
# (column, created_at DESC, payment_id DESC) indexes then serve without a sort.
LIST_PAYMENTS = """
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at
FROM payments
WHERE (%(trip_id)s::bigint IS NULL OR trip_id = %(trip_id)s)
  AND (%(rider_id)s::bigint IS NULL OR rider_id = %(rider_id)s)
  AND (%(driver_id)s::bigint IS NULL OR driver_id = %(driver_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(method)s::text IS NULL OR method = %(method)s)
ORDER BY created_at DESC, payment_id DESC
LIMIT %(fetch)s OFFSET %(offset)s
"""


@dataclass(frozen=True)
class PaymentFilters:
    """Validated filters and page of GET /v1/payments."""

    trip_id: int | None = None
    rider_id: int | None = None
    driver_id: int | None = None
    status: str | None = None
    method: str | None = None
    limit: int = 100
    offset: int = 0


class PaymentService:
    """Reads and writes payments through the connection pool."""

    def __init__(self, pool: ConnectionPool, config: Config) -> None:
        """Keep the pool and configuration."""
        self.pool = pool
        self.config = config

    def get_payment(self, payment_id: int | None) -> dict[str, Any]:
        """Return one payment or raise payment_not_found (also for ids that cannot exist)."""
        row = None
        if payment_id is not None:
            with self.pool.cursor(single_statement=True) as cur:
                cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
                row = cur.fetchone()
        if row is None:
            details = {} if payment_id is None else {"payment_id": payment_id}
            raise NotFoundError("Payment not found.", code="payment_not_found", **details)
        return payment_to_dict(row)

    def list_payments(self, filters: PaymentFilters) -> dict[str, Any]:
        """Return one page of payments, newest first, and whether more follow."""
        params = {**dataclasses.asdict(filters), "fetch": filters.limit + 1}
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(LIST_PAYMENTS, params)
            rows = cur.fetchall()
        page = [payment_to_dict(row) for row in rows[: filters.limit]]
        return {
            "payments": page,
            "count": len(page),
            "limit": filters.limit,
            "offset": filters.offset,
            "has_more": len(rows) > filters.limit,
        }
