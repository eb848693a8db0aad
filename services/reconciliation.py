"""Reconciliation: every PENDING payment and refund is looked up at the gateway until it settles.

After Kill Bill's Janitor. A pass takes due rows with `FOR UPDATE SKIP LOCKED` and leases them (sets
`reconcile_after` into the future) in one short transaction, so any number of processes and
instances can run passes side by side and each row is worked on by one of them. The gateway is
asked outside any transaction; each settlement is then one transaction, guarded by
`status = 'PENDING'`, that also writes its notification to the outbox, so a row is settled, and
announced, exactly once even if a lease ran out while a gateway answered slowly.

What the gateway says decides:
- taken or refused: the payment becomes SUCCESS or FAILED (with the gateway's error code);
- still undecided: looked at again later, the back-off doubling from RECONCILE_INTERVAL to 1 h;
- no answer from the gateway: the rest of the pass leaves it alone and every row is looked at again at
  the next pass (an outage says nothing about a row, so its back-off does not grow);
- no money movement there (ABSENT): an attempt the gateway never received is sent again under the
  same gateway idempotency key while younger than RECONCILE_NO_RECORD_AFTER; after that the payment
  becomes FAILED with GATEWAY_NO_RECORD (rows loaded from a CSV that no gateway ever saw, too), and
  its trip can be charged again.

Holds (contract section 9): a pending authorization settles to AUTHORIZED or FAILED; a capture or
void left PENDING is finished from its record (`HoldService.drive`: sent again under the same gateway
key if the hold is still there); and holds older than HOLD_TTL are taken like a void (AUTHORIZED ->
PENDING with `hold_action = 'expire'`, in the statement that takes them) and released.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from config import Config
from database.pool import ConnectionPool, DatabaseUnavailableError
from models.payment import Payment
from services.charge import ChargeService, charge_outcome, gateway_charge, payment_notification
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    NO_RECORD,
    PENDING,
    SUCCESS,
    VOIDED,
    GatewayResult,
    GatewayUnavailableError,
    PaymentGateway,
)
from services.holds import EXPIRE, HoldService, action_outcome
from services.notification_service import Outbox
from services.payment_queries import SELECT_PAYMENT
from services.refund_service import gateway_refund, settle_refund
from utils.background import PeriodicTask
from utils.logger import get_logger
from utils.metrics import RECONCILIATIONS

logger = get_logger(__name__)

BACKOFF_CAP_SECONDS = 3600
# A row made on another gateway than this process's: only a process on that gateway can look it up.
OTHER_GATEWAY = "other_gateway"
# Results that say nothing about the row itself (the gateway did not answer, or is not ours): the row
# is looked at again at the next pass without growing its back-off or counting an attempt.
NOT_ATTEMPTS = frozenset({"unavailable", OTHER_GATEWAY})
# How long a pass keeps the rows it took: longer than a gateway call may take, short enough that a
# killed worker's rows come back soon.
LEASE_SECONDS = 120

DUE_PAYMENTS = """
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at,
       gateway_payment_method,
       hold_action, capture_amount, capture_fare, reconcile_attempts, now() - created_at AS age
FROM payments
WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
  AND created_at <= now() - make_interval(secs => %(min_age)s) AND payment_id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM idempotency_keys AS k
                  WHERE k.payment_id = payments.payment_id AND k.lock_token IS NOT NULL
                    AND k.locked_at > now() - make_interval(secs => %(lock_timeout)s))
ORDER BY payment_id
LIMIT %(limit)s
"""
# Takes the due rows that no other pass holds, and leases them.
TAKE_DUE_PAYMENTS = """
UPDATE payments AS p
   SET reconcile_after = now() + make_interval(secs => %(lease)s)
  FROM (SELECT payment_id FROM payments
         WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
           AND created_at <= now() - make_interval(secs => %(min_age)s)
           -- Not while a request still holds the charge's idempotency key: it is in its charge's hands.
           AND NOT EXISTS (SELECT 1 FROM idempotency_keys AS k
                            WHERE k.payment_id = payments.payment_id AND k.lock_token IS NOT NULL
                              AND k.locked_at > now() - make_interval(secs => %(lock_timeout)s))
         ORDER BY reconcile_after NULLS FIRST, payment_id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE p.payment_id = due.payment_id
RETURNING p.payment_id, p.trip_id, p.rider_id, p.driver_id, p.amount, p.currency, p.method, p.status, p.reference,
          p.amount_refunded, p.gateway, p.gateway_reference, p.authorized_amount, p.error_code, p.created_at,
          p.updated_at,
          p.gateway_payment_method, p.hold_action, p.capture_amount, p.capture_fare, p.reconcile_attempts,
          now() - p.created_at AS age
"""
SETTLE_PAYMENT = """
UPDATE payments
   SET status = %(status)s, error_code = %(error_code)s,
       gateway_reference = COALESCE(gateway_reference, %(gateway_reference)s),
       reconcile_after = NULL, updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at
"""
# The gateway not answering says nothing about the row: look again at the next pass, without growing its back-off.
NEXT_PASS_PAYMENT = """
UPDATE payments SET reconcile_after = now() + make_interval(secs => %(base)s)
 WHERE payment_id = %(payment_id)s AND status = 'PENDING'
"""
BACK_OFF_PAYMENT = """
UPDATE payments
   SET reconcile_attempts = reconcile_attempts + 1,
       reconcile_after = now() + make_interval(secs => least(%(base)s * power(2, reconcile_attempts), %(cap)s))
 WHERE payment_id = %(payment_id)s AND status = 'PENDING'
"""
DUE_REFUNDS = """
SELECT refund_id, payment_id, refund_amount, gateway, gateway_reference, reconcile_attempts,
       now() - created_at AS age
FROM payment_refunds
WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
  AND created_at <= now() - make_interval(secs => %(min_age)s) AND refund_id > %(after)s
ORDER BY refund_id
LIMIT %(limit)s
"""
TAKE_DUE_REFUNDS = """
UPDATE payment_refunds AS r
   SET reconcile_after = now() + make_interval(secs => %(lease)s)
  FROM (SELECT refund_id FROM payment_refunds
         WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
           AND created_at <= now() - make_interval(secs => %(min_age)s)
         ORDER BY reconcile_after NULLS FIRST, refund_id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE r.refund_id = due.refund_id
RETURNING r.refund_id, r.payment_id, r.refund_amount, r.gateway, r.gateway_reference, r.reconcile_attempts,
          now() - r.created_at AS age
"""
NEXT_PASS_REFUND = """
UPDATE payment_refunds SET reconcile_after = now() + make_interval(secs => %(base)s)
 WHERE refund_id = %(refund_id)s AND status = 'PENDING'
"""
BACK_OFF_REFUND = """
UPDATE payment_refunds
   SET reconcile_attempts = reconcile_attempts + 1,
       reconcile_after = now() + make_interval(secs => least(%(base)s * power(2, reconcile_attempts), %(cap)s))
 WHERE refund_id = %(refund_id)s AND status = 'PENDING'
"""
DUE_EXPIRED_HOLDS = """
SELECT p.payment_id, p.trip_id, p.rider_id, p.driver_id, p.amount, p.currency, p.method, p.status,
          p.reference, p.amount_refunded, p.gateway, p.gateway_reference, p.authorized_amount, p.error_code,
          p.created_at, p.updated_at, p.gateway_payment_method, p.hold_action, p.capture_amount, p.capture_fare,
          p.reconcile_attempts, now() - p.created_at AS age
FROM payments AS p
WHERE p.status = 'AUTHORIZED' AND p.created_at <= now() - make_interval(secs => %(ttl)s) AND p.payment_id > %(after)s
ORDER BY p.payment_id
LIMIT %(limit)s
"""
# Takes expired holds of this gateway the way a void request does: AUTHORIZED -> PENDING 'expire', so a
# capture racing with it finds it PENDING (and this statement skips one a capture already locked).
TAKE_EXPIRED_HOLDS = """
UPDATE payments AS p
   SET status = 'PENDING', hold_action = 'expire', reconcile_attempts = 0,
       reconcile_after = now() + make_interval(secs => %(lease)s), updated_at = now()
  FROM (SELECT payment_id FROM payments
         WHERE status = 'AUTHORIZED' AND created_at <= now() - make_interval(secs => %(ttl)s)
           AND gateway = %(gateway)s
         ORDER BY created_at, payment_id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE p.payment_id = due.payment_id
RETURNING p.payment_id, p.trip_id, p.rider_id, p.driver_id, p.amount, p.currency, p.method, p.status,
          p.reference, p.amount_refunded, p.gateway, p.gateway_reference, p.authorized_amount, p.error_code,
          p.created_at, p.updated_at, p.gateway_payment_method, p.hold_action, p.capture_amount, p.capture_fare,
          p.reconcile_attempts, now() - p.created_at AS age
"""
# Expired holds only another gateway can release: this pass leaves them, and says so.
FOREIGN_EXPIRED_HOLDS = """
SELECT gateway, count(*) AS holds FROM payments
WHERE status = 'AUTHORIZED' AND created_at <= now() - make_interval(secs => %(ttl)s) AND gateway <> %(gateway)s
GROUP BY gateway
"""
DATABASE_NOW = "SELECT now() AS now"
PENDING_TOTALS = """
SELECT (SELECT count(*) FROM payments WHERE status = 'PENDING') AS payments,
       (SELECT count(*) FROM payment_refunds WHERE status = 'PENDING') AS refunds
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """What reconciliation did (or, in a dry run, would do) with one row."""

    kind: str  # payment or refund
    row_id: int
    payment_id: int
    # succeeded, authorized, failed, no_record, unknown, pending, resent, unavailable, other_gateway, skipped
    # (settled by someone else meanwhile), error, and for holds: captured, voided, refused (a capture or void
    # the gateway refused: the hold stands), expired.
    result: str
    status: str | None = None  # the row's new status, when it settled
    error_code: str | None = None
    note: str | None = None  # why, when the result alone does not say

    def describe(self) -> str:
        """One line for people: what happened to which row, and why when that is not obvious."""
        what = f"{self.kind} {self.row_id}" + (f" (payment {self.payment_id})" if self.kind == "refund" else "")
        change = f" -> {self.status}" + (f" {self.error_code}" if self.error_code else "") if self.status else ""
        return f"{what}: {self.result}{change}" + (f" ({self.note})" if self.note else "")


@dataclass(slots=True)
class Report:
    """The decisions of one pass."""

    dry_run: bool = False
    decisions: list[Decision] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many rows ended each way."""
        return dict(Counter(decision.result for decision in self.decisions))


class Reconciler:
    """Settles PENDING payments and refunds against the configured gateway."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        gateway: PaymentGateway,
        charges: ChargeService,
        holds: HoldService,
        outbox: Outbox,
    ) -> None:
        """Keep the pool, settings, the gateway, the charge and hold services (to resend) and the outbox."""
        self.pool = pool
        self.config = config
        self.gateway = gateway
        self.charges = charges
        self.holds = holds
        self.outbox = outbox
        self._loop = PeriodicTask("reconciler", config.RECONCILE_INTERVAL, self._background_pass)
        # Set when the gateway fails to answer during a pass: the rest of that pass backs off without
        # asking, rather than waiting out a timeout per row while the rows it leased wait.
        self._gateway_down = False
        self._pass_started: datetime | None = None
        # The two fields above belong to the pass in progress: one pass at a time per reconciler.
        self._pass_lock = threading.Lock()

    # --- one pass ------------------------------------------------------------------------------

    def run_once(self, dry_run: bool = False, limit: int | None = None) -> Report:
        """Look up every due PENDING payment and refund once; `dry_run` changes nothing and sends nothing."""
        with self._pass_lock:
            return self._pass(dry_run, limit)

    def _pass(self, dry_run: bool, limit: int | None) -> Report:
        """One pass (see run_once)."""
        report = Report(dry_run=dry_run)
        batch = limit or self.config.RECONCILE_BATCH_SIZE
        self._gateway_down = False
        # Rows are due when their time came before the pass began: a row the pass looked at and
        # rescheduled is not taken again by the same pass, so every pass ends.
        with self.pool.cursor() as cur:
            cur.execute(DATABASE_NOW)
            self._pass_started = cur.fetchone()["now"]
        for row in self._rows(FOREIGN_EXPIRED_HOLDS, batch):
            logger.warning(
                "expired holds of another gateway left alone: run reconciliation with that GATEWAY",
                extra={"gateway": row["gateway"], "holds": row["holds"]},
            )
        if dry_run:
            # Nothing is leased in a dry run, so it pages through what is due by id instead.
            for statement, decide, key in (
                (DUE_EXPIRED_HOLDS, self._expired_hold, "payment_id"),
                (DUE_PAYMENTS, self._payment, "payment_id"),
                (DUE_REFUNDS, self._refund, "refund_id"),
            ):
                after = 0
                while rows := self._rows(statement, batch, after):
                    report.decisions.extend(decide(row, dry_run=True) for row in rows)
                    after = rows[-1][key]
            return report
        # Batches until nothing is due; rows backed off or leased are not due again in this pass.
        while rows := self._rows(TAKE_EXPIRED_HOLDS, batch):
            report.decisions.extend(self._safely(self._expired_hold, row) for row in rows)
        while rows := self._rows(TAKE_DUE_PAYMENTS, batch):
            report.decisions.extend(self._safely(self._payment, row) for row in rows)
        while rows := self._rows(TAKE_DUE_REFUNDS, batch):
            report.decisions.extend(self._safely(self._refund, row) for row in rows)
        if any(decision.status for decision in report.decisions):
            self.outbox.wake()
        return report

    def pending_totals(self) -> tuple[int, int]:
        """How many payments and refunds are PENDING now (due or not)."""
        with self.pool.cursor() as cur:
            cur.execute(PENDING_TOTALS)
            row = cur.fetchone()
        return row["payments"], row["refunds"]

    def _rows(self, statement: str, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """The due rows a statement selects (or takes and leases), in one short transaction."""
        params = {
            "min_age": self.config.RECONCILE_MIN_AGE,
            "limit": limit,
            "lease": LEASE_SECONDS,
            "after": after,
            "pass_started": self._pass_started,
            "lock_timeout": self.config.IDEMPOTENCY_LOCK_TIMEOUT,
            "ttl": self.config.HOLD_TTL,
            "gateway": self.gateway.name,
        }
        with self.pool.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def _safely(self, decide: Callable[..., Decision], row: dict[str, Any]) -> Decision:
        """Decide one row; an unexpected error backs that row off and the pass goes on with the others."""
        try:
            return decide(row)
        except DatabaseUnavailableError:
            raise
        except Exception:
            ids = {key: row[key] for key in ("payment_id", "refund_id") if key in row}
            logger.exception("reconciliation could not decide a row; looked at again later", extra=ids)
            if "refund_id" in row:
                return self._refund_pending(row, "error", dry_run=False)
            return self._payment_pending(row, "error", dry_run=False)

    def _is_old(self, row: dict[str, Any]) -> bool:
        """Older than RECONCILE_NO_RECORD_AFTER: a gateway that has no record of it by now never will."""
        return row["age"] >= timedelta(seconds=self.config.RECONCILE_NO_RECORD_AFTER)

    # --- payments ------------------------------------------------------------------------------

    def _payment(self, row: dict[str, Any], dry_run: bool = False) -> Decision:
        """Decide one PENDING payment."""
        payment = Payment.from_row(row)
        if payment.hold_action is not None:
            return self._hold_action(row, payment, dry_run)
        # A pending authorization is sent again as one: held, not captured.
        charge = gateway_charge(payment)
        if payment.gateway is not None and payment.gateway != self.gateway.name:
            # Taken by another gateway than the one configured: only that gateway can say.
            return self._payment_pending(row, OTHER_GATEWAY, dry_run, self._other_gateway_note(payment.gateway))
        if self._gateway_down:
            return self._payment_pending(row, "unavailable", dry_run)
        try:
            found = self.gateway.retrieve(charge)
        except GatewayUnavailableError as exc:
            self._gateway_down = True
            logger.warning(
                "reconciliation: gateway did not answer", extra={"payment_id": payment.payment_id, "error": str(exc)}
            )
            return self._payment_pending(row, "unavailable", dry_run)
        if found.status == ABSENT:
            if self._is_old(row):
                return self._settle_payment(
                    row, GatewayResult(FAILED, NO_RECORD, found.reference), "no_record", dry_run
                )
            if payment.gateway is None:
                # Made before the service had gateways, or loaded: nothing to send it again with.
                return self._payment_pending(row, "unknown", dry_run)
            if dry_run:
                return Decision("payment", payment.payment_id, payment.payment_id, "resent")
            # Recorded here, never received there (or registered and never confirmed): send it again,
            # under the same gateway idempotency key, so it cannot be taken twice.
            logger.warning(
                "reconciliation: resending a payment the gateway never received",
                extra={"payment_id": payment.payment_id},
            )
            found = self.charges.attempt(charge)
            if not found.answered:
                self._gateway_down = True
                return self._payment_pending(row, "unavailable", dry_run)
            if found.status == PENDING:
                return self._payment_pending(row, "resent", dry_run)
        outcome = charge_outcome(found, charge.capture)
        if outcome.status == PENDING:
            return self._payment_pending(row, "pending", dry_run)
        label = {SUCCESS: "succeeded", AUTHORIZED: "authorized"}.get(outcome.status, "failed")
        return self._settle_payment(row, outcome, label, dry_run)

    # --- holds ---------------------------------------------------------------------------------

    def _expired_hold(self, row: dict[str, Any], dry_run: bool = False) -> Decision:
        """Release a hold older than HOLD_TTL (taken and marked as a void in progress, unless a dry run)."""
        if dry_run:
            return Decision("payment", row["payment_id"], row["payment_id"], "expired", "VOIDED")
        logger.info("reconciliation: releasing an expired hold", extra={"payment_id": row["payment_id"]})
        return self._hold_action(row, Payment.from_row(row), dry_run, taken_now=True)

    def _hold_action(self, row: dict[str, Any], payment: Payment, dry_run: bool, taken_now: bool = False) -> Decision:
        """Finish a capture or void left PENDING (or an expired hold's release), from its record.

        `taken_now`: an expired hold this pass just took; its move to PENDING is announced if it stays so.
        """
        action = payment.hold_action or EXPIRE
        if payment.gateway != self.gateway.name:
            return self._payment_pending(row, OTHER_GATEWAY, dry_run, self._other_gateway_note(payment.gateway))
        if self._gateway_down:
            return self._hold_pending(row, payment, action, "unavailable", dry_run, taken_now)
        try:
            if dry_run:
                found = self.gateway.retrieve(gateway_charge(payment))
                result = found if found.status in (ABSENT, AUTHORIZED) else action_outcome(found)
                if result.status == AUTHORIZED:
                    return Decision("payment", payment.payment_id, payment.payment_id, "resent")
            else:
                result = self.holds.drive(payment)
        except GatewayUnavailableError as exc:
            self._gateway_down = True
            logger.warning(
                "reconciliation: gateway did not answer", extra={"payment_id": payment.payment_id, "error": str(exc)}
            )
            return self._hold_pending(row, payment, action, "unavailable", dry_run, taken_now)
        if not result.answered:
            self._gateway_down = True
            return self._hold_pending(row, payment, action, "unavailable", dry_run, taken_now)
        error_code = None
        if result.status == ABSENT:
            if not self._is_old(row):
                return self._hold_pending(row, payment, action, "unknown", dry_run, taken_now)
            result, error_code, label = GatewayResult(FAILED), NO_RECORD, "no_record"
        elif result.status == PENDING:
            return self._hold_pending(row, payment, action, "pending", dry_run, taken_now)
        else:
            label = {SUCCESS: "captured", AUTHORIZED: "refused"}.get(result.status, "voided")
            if action == EXPIRE and result.status == VOIDED:
                label = "expired"
        target = "FAILED" if result.status == FAILED else result.status
        decision = Decision("payment", payment.payment_id, payment.payment_id, label, target, error_code)
        if dry_run:
            return decision
        settled = self.holds.settle(payment, action, result, error_code)
        if settled.status != target:
            return Decision("payment", payment.payment_id, payment.payment_id, "skipped")
        RECONCILIATIONS.labels(label).inc()
        return decision

    def _hold_pending(
        self, row: dict[str, Any], payment: Payment, action: str, label: str, dry_run: bool, taken_now: bool
    ) -> Decision:
        """Leave a hold's action PENDING for a later pass; an expired hold just taken is announced as such."""
        if taken_now and not dry_run:
            # It was AUTHORIZED a moment ago: say that its release is under way.
            self.holds.settle(payment, action, GatewayResult(PENDING))
            self.outbox.wake()
        return self._payment_pending(row, label, dry_run)

    def _settle_payment(self, row: dict[str, Any], result: GatewayResult, label: str, dry_run: bool) -> Decision:
        """Record the payment's final status and its notification in one transaction."""
        decision = Decision("payment", row["payment_id"], row["payment_id"], label, result.status, result.error_code)
        if dry_run:
            return decision
        with self.pool.cursor() as cur:
            cur.execute(
                SETTLE_PAYMENT,
                {
                    "payment_id": row["payment_id"],
                    "status": result.status,
                    "error_code": result.error_code if result.status == FAILED else None,
                    "gateway_reference": result.reference,
                },
            )
            settled = cur.fetchone()
            if settled is None:
                # Someone else settled it between our look-up and now; theirs stands.
                return Decision("payment", row["payment_id"], row["payment_id"], "skipped")
            self.outbox.add(cur, payment_notification(Payment.from_row(settled)))
        RECONCILIATIONS.labels(label).inc()
        logger.info(
            "reconciliation settled a payment",
            extra={"payment_id": row["payment_id"], "status": result.status, "error_code": result.error_code},
        )
        return decision

    def _payment_pending(self, row: dict[str, Any], label: str, dry_run: bool, note: str | None = None) -> Decision:
        """Leave the payment PENDING and look again after a growing back-off (or at the next pass)."""
        if not dry_run:
            statement = NEXT_PASS_PAYMENT if label in NOT_ATTEMPTS else BACK_OFF_PAYMENT
            with self.pool.cursor() as cur:
                cur.execute(statement, {"payment_id": row["payment_id"], **self._backoff()})
            RECONCILIATIONS.labels(label).inc()
        return Decision("payment", row["payment_id"], row["payment_id"], label, note=note)

    def _other_gateway_note(self, gateway: str | None) -> str:
        """Why a row was not looked up: it was made on a gateway this process does not use."""
        return (
            f"made on the {gateway or 'no'} gateway; this process uses {self.gateway.name}:"
            f" run reconciliation with GATEWAY={gateway}"
        )

    def _backoff(self) -> dict[str, float]:
        """Back-off parameters: doubling from the loop's interval (60 s when it is off), capped at 1 h."""
        return {"base": self.config.RECONCILE_INTERVAL or 60.0, "cap": BACKOFF_CAP_SECONDS}

    # --- refunds -------------------------------------------------------------------------------

    def _refund(self, row: dict[str, Any], dry_run: bool = False) -> Decision:
        """Decide one PENDING refund."""
        with self.pool.cursor() as cur:
            cur.execute(SELECT_PAYMENT, {"payment_id": row["payment_id"]})
            payment = Payment.from_row(cur.fetchone())
        refund = gateway_refund(payment, row["refund_id"], row["refund_amount"], row["gateway_reference"])
        if row["gateway"] != self.gateway.name:
            return self._refund_pending(row, OTHER_GATEWAY, dry_run, self._other_gateway_note(row["gateway"]))
        if self._gateway_down:
            return self._refund_pending(row, "unavailable", dry_run)
        try:
            found = self.gateway.retrieve_refund(refund)
            if found.status == ABSENT and not self._is_old(row):
                if dry_run:
                    return Decision("refund", row["refund_id"], row["payment_id"], "resent")
                logger.warning(
                    "reconciliation: resending a refund the gateway never received",
                    extra={"payment_id": row["payment_id"], "refund_id": row["refund_id"]},
                )
                found = self.gateway.refund(refund)
        except GatewayUnavailableError as exc:
            self._gateway_down = True
            logger.warning(
                "reconciliation: gateway did not answer",
                extra={"payment_id": row["payment_id"], "refund_id": row["refund_id"], "error": str(exc)},
            )
            return self._refund_pending(row, "unavailable", dry_run)
        if found.status == ABSENT:
            found, label = GatewayResult(FAILED, NO_RECORD), "no_record"
        elif found.status in (SUCCESS, FAILED):
            label = "succeeded" if found.status == SUCCESS else "failed"
        else:
            return self._refund_pending(row, "pending", dry_run)
        status = "SUCCEEDED" if found.status == SUCCESS else "FAILED"
        decision = Decision("refund", row["refund_id"], row["payment_id"], label, status, found.error_code)
        if dry_run:
            return decision
        with self.pool.cursor() as cur:
            if settle_refund(cur, self.outbox, refund, status, found) is None:
                return Decision("refund", row["refund_id"], row["payment_id"], "skipped")
        RECONCILIATIONS.labels(label).inc()
        logger.info(
            "reconciliation settled a refund",
            extra={"payment_id": row["payment_id"], "refund_id": row["refund_id"], "refund_status": status},
        )
        return decision

    def _refund_pending(self, row: dict[str, Any], label: str, dry_run: bool, note: str | None = None) -> Decision:
        """Leave the refund PENDING and look again after a growing back-off (or at the next pass)."""
        if not dry_run:
            statement = NEXT_PASS_REFUND if label in NOT_ATTEMPTS else BACK_OFF_REFUND
            with self.pool.cursor() as cur:
                cur.execute(statement, {"refund_id": row["refund_id"], **self._backoff()})
            RECONCILIATIONS.labels(label).inc()
        return Decision("refund", row["refund_id"], row["payment_id"], label, note=note)

    # --- the background loop -------------------------------------------------------------------

    def start(self) -> None:
        """Run a pass every RECONCILE_INTERVAL seconds in a daemon thread (not when the interval is 0)."""
        self._loop.start()

    def _background_pass(self) -> None:
        """One pass of the background loop, logged when it decided anything."""
        report = self.run_once()
        if report.decisions:
            logger.info("reconciliation pass", extra={"counts": report.counts()})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop after the pass in progress."""
        self._loop.stop(timeout)
