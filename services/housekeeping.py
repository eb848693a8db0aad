"""Housekeeping: the tables that grow with traffic but are not records are purged in small batches.

Expired idempotency keys (older than IDEMPOTENCY_KEY_TTL) and delivered notifications (older than
NOTIFY_RETENTION) are deleted by a background loop in each process, a batch at a time: each batch is
its own short transaction, and rows are taken with SKIP LOCKED, so several processes purge side by
side without waiting on each other or on the requests that write those tables. Payments, refunds,
receipts and dead notifications are records and are never purged here.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import Config
from database.pool import ConnectionPool
from database.prepared import Prepared
from utils.background import PeriodicTask
from utils.logger import get_logger

logger = get_logger(__name__)

PURGE_BATCH_SIZE = 1000
# A pass stops after this many batches; the next pass goes on. Keeps one pass (and the WAL it writes) bounded.
MAX_BATCHES_PER_PASS = 100

PURGE_EXPIRED_KEYS = Prepared("""
DELETE FROM idempotency_keys
 WHERE (scope, key_hash) IN (
       SELECT scope, key_hash FROM idempotency_keys
        WHERE expires_at <= now()
        LIMIT %(batch)s
          FOR UPDATE SKIP LOCKED)
""")
PURGE_DELIVERED_NOTIFICATIONS = Prepared("""
DELETE FROM notification_outbox
 WHERE notification_id IN (
       SELECT notification_id FROM notification_outbox
        WHERE status = 'DELIVERED' AND updated_at < now() - make_interval(secs => %(retention)s)
        LIMIT %(batch)s
          FOR UPDATE SKIP LOCKED)
""")


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """Rows one pass deleted, per table."""

    idempotency_keys: int
    notifications: int


class Housekeeper:
    """Purges expired idempotency keys and old delivered notifications, in batches."""

    def __init__(self, pool: ConnectionPool, config: Config, batch_size: int = PURGE_BATCH_SIZE) -> None:
        """Keep the pool, the retention settings and the batch size."""
        self.pool = pool
        self.config = config
        self.batch_size = batch_size
        self._loop = PeriodicTask("housekeeping", config.HOUSEKEEPING_INTERVAL, self._background_pass)

    def _purge(self, statement: str, params: dict[str, object]) -> int:
        """Run a batched DELETE until a batch comes back short (or the pass's batch limit); return rows deleted."""
        deleted = 0
        for _ in range(MAX_BATCHES_PER_PASS):
            with self.pool.cursor(single_statement=True) as cur:
                cur.execute(statement, {**params, "batch": self.batch_size})
                count = cur.rowcount
            deleted += count
            if count < self.batch_size or self._loop.stopping.is_set():
                break
        return deleted

    def purge_expired_keys(self) -> int:
        """Delete idempotency keys past their expiry; return how many."""
        return self._purge(PURGE_EXPIRED_KEYS, {})

    def purge_delivered_notifications(self) -> int:
        """Delete notifications delivered more than NOTIFY_RETENTION seconds ago; return how many."""
        return self._purge(PURGE_DELIVERED_NOTIFICATIONS, {"retention": self.config.NOTIFY_RETENTION})

    def run_once(self) -> PurgeReport:
        """One pass over both tables."""
        return PurgeReport(self.purge_expired_keys(), self.purge_delivered_notifications())

    def start(self) -> None:
        """Run a pass every HOUSEKEEPING_INTERVAL seconds in a daemon thread (not when the interval is 0)."""
        self._loop.start()

    def _background_pass(self) -> None:
        """One pass of the background loop, logged when it deleted anything."""
        report = self.run_once()
        if report.idempotency_keys or report.notifications:
            logger.info(
                "housekeeping pass",
                extra={"idempotency_keys": report.idempotency_keys, "notifications": report.notifications},
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop after the batch in progress."""
        self._loop.stop(timeout)
