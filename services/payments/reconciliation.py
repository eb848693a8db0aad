"""Reconciliation: every PENDING payment, hold action and refund is looked up at its gateway until it settles.

After Kill Bill's Janitor. A pass takes due rows with `FOR UPDATE SKIP LOCKED` and leases them (sets
`reconcile_after` into the future) in one short transaction, so any number of processes and
instances can run passes side by side and each row is worked on by one of them. The gateway is
asked outside any transaction; each settlement is then one transaction, guarded by
`status = 'PENDING'`, that also settles the row's transaction and writes its notification, so a row
is settled, and announced, exactly once even if a lease ran out while a gateway answered slowly.

One reconciler per kind (`services.payments.reconcilers`: expired holds, payments and their hold
actions, refunds) decides rows; this module owns what they share: the queues (take, lease, back
off), the pass, and which gateways answered. Each row goes to the gateway that made it, whatever
GATEWAY says now; a row whose gateway is not configured in this process is passed over, saying so.

What the gateway says decides:
- taken or refused: the row settles (SUCCESS, AUTHORIZED or FAILED with the gateway's error code);
- still undecided: looked at again later, the back-off doubling from RECONCILE_INTERVAL to 1 h;
- no answer: the rest of the pass leaves that gateway's rows alone and they are looked at again at
  the next pass (an outage says nothing about a row, so its back-off does not grow);
- no money movement there (ABSENT): an attempt the gateway never received is sent again under the
  same gateway idempotency key while younger than RECONCILE_NO_RECORD_AFTER; after that it becomes
  FAILED with GATEWAY_NO_RECORD (rows loaded from a CSV that no gateway ever saw, too).
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
from services.gateways import GatewayNotConfiguredError, PaymentGateway
from services.gateways.registry import GatewayRegistry
from services.notification_service import Outbox
from services.payments.holds import RECORD_ACTION_TRANSACTION
from services.payments.repository import PAYMENT_COLUMNS, PAYMENT_COLUMNS_OF_P
from utils.background import PeriodicTask
from utils.logger import get_logger
from utils.metrics import RECONCILIATIONS

logger = get_logger(__name__)

BACKOFF_CAP_SECONDS = 3600
# A row made on a gateway this process has not configured: only a process that has it can look it up.
NOT_CONFIGURED = "gateway_not_configured"
UNAVAILABLE = "unavailable"
# Results that say nothing about the row itself (the gateway did not answer, or is not here): the row
# is looked at again at the next pass without growing its back-off or counting an attempt.
NOT_ATTEMPTS = frozenset({UNAVAILABLE, NOT_CONFIGURED})
# How long a pass keeps the rows it took: longer than a gateway call may take, short enough that a
# killed worker's rows come back soon.
LEASE_SECONDS = 120

# Not while a request still holds the charge's idempotency key: it is in its charge's hands.
_NOT_IN_FLIGHT = """
  AND NOT EXISTS (SELECT 1 FROM idempotency_keys AS k
                   WHERE k.payment_id = payments.payment_id AND k.lock_token IS NOT NULL
                     AND k.locked_at > now() - make_interval(secs => %(lock_timeout)s))
"""
_DUE_PAYMENT = """
WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
  AND created_at <= now() - make_interval(secs => %(min_age)s)
"""
DUE_PAYMENTS = (
    "SELECT " + PAYMENT_COLUMNS + ", reconcile_attempts, now() - created_at AS age FROM payments"
    + _DUE_PAYMENT + _NOT_IN_FLIGHT
    + " AND payment_id > %(after)s ORDER BY payment_id LIMIT %(limit)s"
)  # fmt: skip
# Takes the due rows that no other pass holds, and leases them.
TAKE_DUE_PAYMENTS = (
    """
UPDATE payments AS p
   SET reconcile_after = now() + make_interval(secs => %(lease)s)
  FROM (SELECT payment_id AS due_id FROM payments"""
    + _DUE_PAYMENT + _NOT_IN_FLIGHT
    + """
         ORDER BY reconcile_after NULLS FIRST, payment_id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE p.payment_id = due.due_id
RETURNING """
    + PAYMENT_COLUMNS_OF_P + ", p.reconcile_attempts, now() - p.created_at AS age"
)  # fmt: skip
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
_REFUND_COLUMNS = "refund_id, payment_id, refund_amount, gateway, gateway_reference, reconcile_attempts"
_DUE_REFUND = """
WHERE status = 'PENDING' AND (reconcile_after IS NULL OR reconcile_after <= %(pass_started)s)
  AND created_at <= now() - make_interval(secs => %(min_age)s)
"""
DUE_REFUNDS = (
    "SELECT " + _REFUND_COLUMNS + ", now() - created_at AS age FROM payment_refunds" + _DUE_REFUND
    + " AND refund_id > %(after)s ORDER BY refund_id LIMIT %(limit)s"
)  # fmt: skip
TAKE_DUE_REFUNDS = (
    """
UPDATE payment_refunds AS r
   SET reconcile_after = now() + make_interval(secs => %(lease)s)
  FROM (SELECT refund_id AS due_id FROM payment_refunds"""
    + _DUE_REFUND
    + """
         ORDER BY reconcile_after NULLS FIRST, refund_id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) AS due
 WHERE r.refund_id = due.due_id
RETURNING r.refund_id, r.payment_id, r.refund_amount, r.gateway, r.gateway_reference, r.reconcile_attempts,
          now() - r.created_at AS age
"""
)
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
_EXPIRED = """
WHERE status = 'AUTHORIZED' AND created_at <= now() - make_interval(secs => %(ttl)s)
"""
DUE_EXPIRED_HOLDS = (
    "SELECT " + PAYMENT_COLUMNS + ", reconcile_attempts, now() - created_at AS age FROM payments" + _EXPIRED
    + " AND gateway = ANY(%(gateways)s) AND payment_id > %(after)s ORDER BY payment_id LIMIT %(limit)s"
)  # fmt: skip
# Takes expired holds of configured gateways the way a void request does: AUTHORIZED -> PENDING 'expire',
# with its VOID transaction, so a capture racing with it finds it PENDING (and this skips one a capture locked).
TAKE_EXPIRED_HOLDS = (
    """
WITH action AS (
    UPDATE payments AS p
       SET status = 'PENDING', hold_action = 'expire', reconcile_attempts = 0,
           reconcile_after = now() + make_interval(secs => %(lease)s), updated_at = now()
      FROM (SELECT payment_id AS due_id FROM payments"""
    + _EXPIRED
    + """
               AND gateway = ANY(%(gateways)s)
             ORDER BY created_at, payment_id
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED) AS due
     WHERE p.payment_id = due.due_id
    RETURNING """
    + PAYMENT_COLUMNS_OF_P + ", p.reconcile_attempts, now() - p.created_at AS age"
    + RECORD_ACTION_TRANSACTION
)  # fmt: skip
# Expired holds no gateway configured here can release: this pass leaves them, and says so.
UNREACHABLE_EXPIRED_HOLDS = (
    "SELECT gateway, count(*) AS holds FROM payments" + _EXPIRED
    + " AND NOT (gateway = ANY(%(gateways)s)) GROUP BY gateway"
)  # fmt: skip
DATABASE_NOW = "SELECT now() AS now"
PENDING_TOTALS = """
SELECT (SELECT count(*) FROM payments WHERE status = 'PENDING') AS payments,
       (SELECT count(*) FROM payment_refunds WHERE status = 'PENDING') AS refunds
"""


@dataclass(frozen=True, slots=True)
class Queue:
    """One kind of row reconciliation works through: how it is taken (leased), listed in a dry run, put back."""

    kind: str  # payment or refund: what the decisions name
    key: str  # the row's id column
    take: str
    due: str
    next_pass: str
    back_off: str


PAYMENTS = Queue("payment", "payment_id", TAKE_DUE_PAYMENTS, DUE_PAYMENTS, NEXT_PASS_PAYMENT, BACK_OFF_PAYMENT)
EXPIRED_HOLDS = Queue(
    "payment", "payment_id", TAKE_EXPIRED_HOLDS, DUE_EXPIRED_HOLDS, NEXT_PASS_PAYMENT, BACK_OFF_PAYMENT
)
REFUNDS = Queue("refund", "refund_id", TAKE_DUE_REFUNDS, DUE_REFUNDS, NEXT_PASS_REFUND, BACK_OFF_REFUND)


@dataclass(frozen=True, slots=True)
class Decision:
    """What reconciliation did (or, in a dry run, would do) with one row."""

    kind: str  # payment or refund
    row_id: int
    payment_id: int
    # succeeded, authorized, failed, no_record, unknown, pending, resent, unavailable, gateway_not_configured,
    # skipped (settled by someone else meanwhile), error, and for holds: captured, voided, refused (a capture or
    # void the gateway refused: the hold stands), expired.
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


class Pass:
    """What the reconcilers of one pass share: the database clock, the gateways, and which did not answer."""

    def __init__(self, reconciler: Reconciler, dry_run: bool, started: datetime) -> None:
        """Start a pass at the database's `started`."""
        self.reconciler = reconciler
        self.dry_run = dry_run
        self.started = started
        # Gateways that failed to answer during this pass: the rest of it backs their rows off without
        # asking, rather than waiting out a timeout per row while the rows it leased wait.
        self.down: set[str] = set()

    def gateway(self, queue: Queue, row: dict[str, Any], name: str | None) -> PaymentGateway | Decision:
        """The row's gateway, or the Decision that leaves the row alone (not configured here, or down)."""
        try:
            gateway = self.reconciler.gateways.get(name)
        except GatewayNotConfiguredError as exc:
            return self.leave(queue, row, NOT_CONFIGURED, str(exc))
        if gateway.name in self.down:
            return self.leave(queue, row, UNAVAILABLE)
        return gateway

    def gateway_down(self, queue: Queue, row: dict[str, Any], gateway: PaymentGateway, error: object) -> Decision:
        """Note that the gateway did not answer, and leave the row for the next pass."""
        self.down.add(gateway.name)
        logger.warning(
            "reconciliation: gateway did not answer",
            extra={"gateway": gateway.name, queue.key: row[queue.key], "error": str(error)},
        )
        return self.leave(queue, row, UNAVAILABLE)

    def leave(self, queue: Queue, row: dict[str, Any], label: str, note: str | None = None) -> Decision:
        """Leave the row PENDING: look again after a growing back-off (or at the next pass when it says nothing)."""
        if not self.dry_run:
            statement = queue.next_pass if label in NOT_ATTEMPTS else queue.back_off
            with self.reconciler.pool.cursor() as cur:
                cur.execute(statement, {queue.key: row[queue.key], **self.reconciler.backoff()})
            RECONCILIATIONS.labels(label).inc()
        return Decision(queue.kind, row[queue.key], row["payment_id"], label, note=note)

    def is_old(self, row: dict[str, Any]) -> bool:
        """Older than RECONCILE_NO_RECORD_AFTER: a gateway that has no record of it by now never will."""
        return row["age"] >= timedelta(seconds=self.reconciler.config.RECONCILE_NO_RECORD_AFTER)

    def settled(self, decision: Decision) -> Decision:
        """Count a settled row."""
        RECONCILIATIONS.labels(decision.result).inc()
        return decision


# A reconciler of one kind: decides one row of its queue within a pass.
Decide = Callable[[Pass, dict[str, Any]], Decision]


class Reconciler:
    """Runs passes over the queues, each row decided by the reconciler of its kind."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        gateways: GatewayRegistry,
        outbox: Outbox,
        deciders: list[tuple[Queue, Decide]],
    ) -> None:
        """Keep the pool, settings, gateways, the outbox and, in pass order, each queue with its reconciler."""
        self.pool = pool
        self.config = config
        self.gateways = gateways
        self.outbox = outbox
        self.deciders = deciders
        self._loop = PeriodicTask("reconciler", config.RECONCILE_INTERVAL, self._background_pass)
        # One pass at a time per reconciler.
        self._pass_lock = threading.Lock()

    def run_once(self, dry_run: bool = False, limit: int | None = None) -> Report:
        """Look up every due PENDING payment and refund once; `dry_run` changes nothing and sends nothing."""
        with self._pass_lock:
            return self._pass(dry_run, limit or self.config.RECONCILE_BATCH_SIZE)

    def _pass(self, dry_run: bool, batch: int) -> Report:
        """One pass (see run_once)."""
        report = Report(dry_run=dry_run)
        # Rows are due when their time came before the pass began: a row the pass looked at and
        # rescheduled is not taken again by the same pass, so every pass ends.
        with self.pool.cursor() as cur:
            cur.execute(DATABASE_NOW)
            current = Pass(self, dry_run, cur.fetchone()["now"])
        for row in self._rows(current, UNREACHABLE_EXPIRED_HOLDS, batch):
            logger.warning(
                "expired holds of a gateway not configured here left alone: run reconciliation where it is",
                extra={"gateway": row["gateway"], "holds": row["holds"]},
            )
        for queue, decide in self.deciders:
            if dry_run:
                # Nothing is leased in a dry run, so it pages through what is due by id instead.
                after = 0
                while rows := self._rows(current, queue.due, batch, after):
                    report.decisions.extend(decide(current, row) for row in rows)
                    after = rows[-1][queue.key]
                continue
            # Batches until nothing is due; rows backed off or leased are not due again in this pass.
            while rows := self._rows(current, queue.take, batch):
                report.decisions.extend(self._safely(current, queue, decide, row) for row in rows)
        if not dry_run and any(decision.status for decision in report.decisions):
            self.outbox.wake()
        return report

    def pending_totals(self) -> tuple[int, int]:
        """How many payments and refunds are PENDING now (due or not)."""
        with self.pool.cursor() as cur:
            cur.execute(PENDING_TOTALS)
            row = cur.fetchone()
        return row["payments"], row["refunds"]

    def _rows(self, current: Pass, statement: str, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """The due rows a statement selects (or takes and leases), in one short transaction."""
        params = {
            "min_age": self.config.RECONCILE_MIN_AGE,
            "limit": limit,
            "lease": LEASE_SECONDS,
            "after": after,
            "pass_started": current.started,
            "lock_timeout": self.config.IDEMPOTENCY_LOCK_TIMEOUT,
            "ttl": self.config.HOLD_TTL,
            "gateways": list(self.gateways.names()),
        }
        with self.pool.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    @staticmethod
    def _safely(current: Pass, queue: Queue, decide: Decide, row: dict[str, Any]) -> Decision:
        """Decide one row; an unexpected error backs that row off and the pass goes on with the others."""
        try:
            return decide(current, row)
        except DatabaseUnavailableError:
            raise
        except Exception:
            logger.exception(
                "reconciliation could not decide a row; looked at again later", extra={queue.key: row[queue.key]}
            )
            return current.leave(queue, row, "error")

    def backoff(self) -> dict[str, float]:
        """Back-off parameters: doubling from the loop's interval (60 s when it is off), capped at 1 h."""
        return {"base": self.config.RECONCILE_INTERVAL or 60.0, "cap": BACKOFF_CAP_SECONDS}

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
