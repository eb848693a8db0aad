"""The embedded gateway simulator: a processor's ledger in the service's database, decided by configured rates.

Each payment or refund is one row of `simulator_transactions`, keyed by the gateway idempotency key,
so a repeated call finds its row and changes nothing, and a retrieve after a restart knows what
happened. Charges succeed with GATEWAY_SUCCESS_RATE; a share GATEWAY_PENDING_RATE stays undecided
until the first retrieve at least GATEWAY_SETTLE_SECONDS later, which then decides it by the same
rate. Refunds are refused when the simulator's own ledger says the money is not there to give back
(payment unknown, not captured, or already refunded), else succeed (or wait, at the pending rate).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import psycopg2

from database.pool import ASYNC_COMMIT, ConnectionPool, Cursor, DatabaseUnavailableError
from database.prepared import Prepared
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    GATEWAY_ERROR_CODES,
    PENDING,
    SUCCESS,
    VOIDED,
    GatewayCharge,
    GatewayRefund,
    GatewayResult,
    GatewayUnavailableError,
)

INSERT_PAYMENT = Prepared("""
INSERT INTO simulator_transactions
       (idempotency_key, reference, kind, amount, amount_captured, currency, capture, status, error_code,
        settles_at)
VALUES (%(key)s, %(reference)s, 'payment', %(amount)s, %(captured)s, %(currency)s, %(capture)s, %(status)s,
        %(error_code)s, now() + make_interval(secs => %(settle_seconds)s))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
""")
INSERT_REFUND = Prepared("""
INSERT INTO simulator_transactions
       (idempotency_key, reference, kind, payment_key, amount, currency, status, error_code, settles_at)
VALUES (%(key)s, %(reference)s, 'refund', %(payment_key)s, %(amount)s, %(currency)s, %(status)s, %(error_code)s,
        now() + make_interval(secs => %(settle_seconds)s))
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
""")
SELECT_TRANSACTION = Prepared("""
SELECT idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at, capture
FROM simulator_transactions WHERE idempotency_key = %(key)s
""")
LOCK_TRANSACTION = Prepared("""
SELECT idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
FROM simulator_transactions WHERE idempotency_key = %(key)s FOR UPDATE
""")
# The first retrieve after settles_at decides an undecided transaction; the status guard makes
# sure only one caller decides it.
SETTLE = Prepared("""
UPDATE simulator_transactions
   SET status = %(status)s, error_code = %(error_code)s,
       amount_captured = CASE WHEN %(status)s = 'SUCCEEDED' AND kind = 'payment' THEN amount ELSE 0 END,
       updated_at = now()
 WHERE idempotency_key = %(key)s AND status = 'PENDING' AND settles_at <= now()
RETURNING idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
""")
CAPTURE = Prepared("""
UPDATE simulator_transactions
   SET status = 'SUCCEEDED', amount_captured = %(amount)s, updated_at = now()
 WHERE idempotency_key = %(key)s AND status = 'REQUIRES_CAPTURE' AND %(amount)s <= amount
RETURNING idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
""")
VOID = Prepared("""
UPDATE simulator_transactions SET status = 'CANCELED', updated_at = now()
 WHERE idempotency_key = %(key)s AND status = 'REQUIRES_CAPTURE'
RETURNING idempotency_key, reference, status, error_code, amount, amount_captured, amount_refunded, settles_at
""")
RESERVE_REFUND = Prepared("""
UPDATE simulator_transactions SET amount_refunded = amount_refunded + %(amount)s, updated_at = now()
 WHERE idempotency_key = %(payment_key)s
""")

SIMULATOR_STATUSES = {
    "SUCCEEDED": SUCCESS,
    "REQUIRES_CAPTURE": AUTHORIZED,
    "FAILED": FAILED,
    "PENDING": PENDING,
    "CANCELED": VOIDED,
}


def _result(row: dict[str, Any] | None) -> GatewayResult:
    """The simulator's row as a gateway answer."""
    if row is None:
        return GatewayResult(ABSENT)
    status = SIMULATOR_STATUSES[row["status"]]
    captured = row["amount_captured"] if status == SUCCESS and row.get("amount_captured") else None
    return GatewayResult(status, row["error_code"], row["reference"], captured=captured)


class SimulatedGateway:
    """The contract's simulator, with a ledger of its own in the service's database."""

    name: ClassVar[str] = "simulator"
    needs_payment_method: ClassVar[bool] = False

    def __init__(
        self,
        pool: ConnectionPool,
        success_rate: float,
        pending_rate: float = 0.0,
        settle_seconds: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        """Rates as GATEWAY_SUCCESS_RATE / GATEWAY_PENDING_RATE; `rng` lets tests fix the coin."""
        self._pool = pool
        self._success_rate = success_rate
        self._pending_rate = pending_rate
        self._settle_seconds = settle_seconds
        self._rng = rng or random.SystemRandom()

    @contextmanager
    def _ledger(self, single_statement: bool = False) -> Iterator[Cursor]:
        """A transaction on the simulator's table; its database being away is the gateway being away."""
        try:
            with self._pool.cursor(single_statement) as cur:
                yield cur
        except (DatabaseUnavailableError, psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise GatewayUnavailableError(f"simulated gateway unreachable: {exc}") from exc

    def _verdict(self, capture: bool = True) -> tuple[str, str | None]:
        """Approve at the success rate (held, when not capturing), else refuse with an error code."""
        if self._rng.random() < self._success_rate:
            return ("SUCCEEDED" if capture else "REQUIRES_CAPTURE"), None
        return "FAILED", self._rng.choice(GATEWAY_ERROR_CODES)

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        """Any amount of the ledger's (two decimals) will do."""
        return True

    def register(self, charge: GatewayCharge) -> str | None:
        """Nothing to register: the simulator finds payments by their idempotency key."""
        return None

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        """Decide the charge once; a repeated call answers what was decided."""
        if self._pending_rate and self._rng.random() < self._pending_rate:
            status, error_code = "PENDING", None
        else:
            status, error_code = self._verdict(charge.capture)
        params = {
            "key": charge.idempotency_key,
            "reference": f"sim_{secrets.token_hex(12)}",
            "amount": charge.amount,
            "captured": charge.amount if status == "SUCCEEDED" else Decimal(0),
            "currency": charge.currency,
            "capture": charge.capture,
            "status": status,
            "error_code": error_code,
            "settle_seconds": self._settle_seconds,
        }
        with self._ledger(single_statement=True) as cur:
            # Without waiting for the flush: a later synchronous commit (the charge's outcome) flushes
            # this row first, and if both are lost in a crash the payment is still PENDING with its
            # attempt recorded, so reconciliation finds nothing here and sends it again under the same key.
            cur.execute_together((ASYNC_COMMIT, {}), (INSERT_PAYMENT, params))
            row = cur.fetchone()
        if row is None:
            return self.retrieve(charge)
        return _result(row)

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        """The payment as the simulator knows it, deciding it if it was due to settle."""
        with self._ledger() as cur:
            cur.execute(SELECT_TRANSACTION, {"key": charge.idempotency_key})
            row = cur.fetchone()
            if row is not None and row["status"] == "PENDING":
                status, error_code = self._verdict(row["capture"])
                cur.execute(SETTLE, {"key": charge.idempotency_key, "status": status, "error_code": error_code})
                row = self._settled_or_reread(cur, charge.idempotency_key)
        return _result(row)

    @staticmethod
    def _settled_or_reread(cur: Cursor, key: str) -> dict[str, Any] | None:
        """The row SETTLE returned, or, when it changed nothing (not due, or decided by another caller), as it is."""
        row = cur.fetchone()
        if row is None:
            cur.execute(SELECT_TRANSACTION, {"key": key})
            row = cur.fetchone()
        return row

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        """Capture part or all of a hold; capturing a captured hold again changes nothing.

        A capture it refuses answers where the payment stands (still AUTHORIZED, VOIDED, ...),
        as Stripe's PaymentIntent would; FAILED GATEWAY_ERROR when it never held the payment.
        """
        with self._ledger() as cur:
            cur.execute(CAPTURE, {"key": charge.idempotency_key, "amount": amount})
            row = cur.fetchone()
            if row is None:
                cur.execute(SELECT_TRANSACTION, {"key": charge.idempotency_key})
                row = cur.fetchone()
                if row is None:
                    return GatewayResult(FAILED, "GATEWAY_ERROR")
        return _result(row)

    def void(self, charge: GatewayCharge) -> GatewayResult:
        """Release a hold; releasing it again changes nothing. A refused void answers where the payment stands."""
        with self._ledger() as cur:
            cur.execute(VOID, {"key": charge.idempotency_key})
            row = cur.fetchone()
            if row is None:
                cur.execute(SELECT_TRANSACTION, {"key": charge.idempotency_key})
                row = cur.fetchone()
                if row is None:
                    return GatewayResult(FAILED, "GATEWAY_ERROR")
        return _result(row)

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        """Give money back if the simulator's ledger holds it; a repeated call answers what was decided."""
        with self._ledger() as cur:
            # The payment's row is locked first so that concurrent refunds see each other's amounts.
            cur.execute(LOCK_TRANSACTION, {"key": refund.payment.idempotency_key})
            payment = cur.fetchone()
            if payment is None:
                # A payment this gateway never took (CASH, imported): there is nothing to give back.
                return GatewayResult(FAILED, "GATEWAY_ERROR")
            cur.execute(SELECT_TRANSACTION, {"key": refund.idempotency_key})
            existing = cur.fetchone()
            if existing is not None:
                return _result(existing)
            if (
                payment["status"] != "SUCCEEDED"
                or refund.amount > payment["amount_captured"] - payment["amount_refunded"]
            ):
                status, error_code = "FAILED", "GATEWAY_ERROR"
            elif self._pending_rate and self._rng.random() < self._pending_rate:
                status, error_code = "PENDING", None
            else:
                status, error_code = "SUCCEEDED", None
            cur.execute(
                INSERT_REFUND,
                {
                    "key": refund.idempotency_key,
                    "reference": f"simre_{secrets.token_hex(12)}",
                    "payment_key": payment["idempotency_key"],
                    "amount": refund.amount,
                    "currency": refund.payment.currency,
                    "status": status,
                    "error_code": error_code,
                    "settle_seconds": self._settle_seconds,
                },
            )
            row = cur.fetchone()
            if status != "FAILED":
                cur.execute(RESERVE_REFUND, {"payment_key": payment["idempotency_key"], "amount": refund.amount})
        return _result(row)

    def retrieve_refund(self, refund: GatewayRefund) -> GatewayResult:
        """The refund as the simulator knows it; an undecided one succeeds once due."""
        with self._ledger() as cur:
            cur.execute(SELECT_TRANSACTION, {"key": refund.idempotency_key})
            row = cur.fetchone()
            if row is not None and row["status"] == "PENDING":
                cur.execute(SETTLE, {"key": refund.idempotency_key, "status": "SUCCEEDED", "error_code": None})
                row = self._settled_or_reread(cur, refund.idempotency_key)
        return _result(row)
