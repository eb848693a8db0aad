"""Notifications that are never lost: a transactional outbox and a dispatcher that retries.

The service writes each notification into `notification_outbox` in the same transaction as the
payment, refund or receipt it announces, so it exists exactly when that does. A dispatcher claims
due rows (`FOR UPDATE SKIP LOCKED`, then a lease), POSTs them to the notification service with the
notification id as `Idempotency-Key`, and on failure retries with exponential backoff and jitter
until NOTIFY_MAX_ATTEMPTS, after which the row is marked DEAD with its last error.

With NOTIFY_SIGNING_SECRET set, each POST carries `Payment-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256(secret, "<t>.<raw body>")>` (Stripe's scheme), computed over exactly the bytes sent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from config import Config
from database.pool import UNMIGRATED_ERRORS, ConnectionPool, DatabaseUnavailableError, unmigrated_reason
from database.prepared import Prepared
from services.clients.http import internal_session
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import NOTIFICATION_DISPATCHER_DB_OUTAGES, NOTIFICATIONS
from utils.outage import DependencyWatch

logger = get_logger(__name__)

SIGNATURE_HEADER = "Payment-Signature"

INSERT_NOTIFICATION = Prepared("""
INSERT INTO notification_outbox (notification_id, event_type, payload)
VALUES (%(notification_id)s, %(event_type)s, %(payload)s)
ON CONFLICT (notification_id) DO NOTHING
""")
# SKIP LOCKED lets several dispatchers (threads, workers, instances) claim disjoint rows; the lease
# (next_attempt_at pushed past the send timeout) keeps a claimed row from being claimed again while
# it is being sent, and brings it back if the dispatcher dies mid-send.
CLAIM_DUE = Prepared("""
WITH due AS (
    SELECT notification_id FROM notification_outbox
    WHERE status = 'PENDING' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)
UPDATE notification_outbox AS o
   SET attempts = o.attempts + 1,
       next_attempt_at = now() + make_interval(secs => %(lease)s),
       updated_at = now()
  FROM due
 WHERE o.notification_id = due.notification_id
RETURNING o.notification_id, o.event_type, o.payload, o.attempts
""")
MARK_DELIVERED = Prepared("""
UPDATE notification_outbox
   SET status = 'DELIVERED', delivered_at = now(), last_error = NULL, updated_at = now()
 WHERE notification_id = %(notification_id)s AND status = 'PENDING'
""")
SCHEDULE_RETRY = Prepared("""
UPDATE notification_outbox
   SET next_attempt_at = now() + make_interval(secs => %(delay)s), last_error = %(error)s, updated_at = now()
 WHERE notification_id = %(notification_id)s AND status = 'PENDING'
""")
MARK_DEAD = Prepared("""
UPDATE notification_outbox
   SET status = 'DEAD', last_error = %(error)s, updated_at = now()
 WHERE notification_id = %(notification_id)s AND status = 'PENDING'
""")
LIST_DEAD = """
SELECT notification_id, event_type, attempts, last_error, created_at, updated_at
FROM notification_outbox
WHERE status = 'DEAD'
ORDER BY updated_at
LIMIT %(limit)s
"""
REQUEUE_DEAD = """
UPDATE notification_outbox
   SET status = 'PENDING', attempts = 0, next_attempt_at = now(), last_error = NULL, updated_at = now()
 WHERE status = 'DEAD' AND (%(all)s OR notification_id = ANY(%(ids)s))
RETURNING notification_id
"""


class Outbox:
    """Writes notifications inside the caller's transaction and nudges the local dispatcher afterwards."""

    def __init__(self) -> None:
        """No dispatcher to wake until one is attached."""
        self._wake = threading.Event()

    def add(self, cur: Any, notification: dict[str, Any]) -> None:
        """Queue one notification in the caller's transaction (a repeated id is ignored)."""
        cur.execute(INSERT_NOTIFICATION, self.row(notification))

    @staticmethod
    def row(notification: dict[str, Any]) -> dict[str, Any]:
        """The outbox row of a notification: INSERT_NOTIFICATION's parameters."""
        return {
            "notification_id": notification["notification_id"],
            "event_type": notification["type"],
            "payload": dump_json(notification),
        }

    def wake(self) -> None:
        """Tell the dispatcher in this process that something was committed (it polls anyway)."""
        self._wake.set()

    @property
    def wake_event(self) -> threading.Event:
        """The event a dispatcher waits on between polls."""
        return self._wake


class DeliveryError(Exception):
    """The notification service did not accept a notification."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Payment-Signature` value for `body` (the exact bytes sent) signed at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


_unsigned_warned = threading.Event()
_unsigned_warning = threading.Lock()


def _warn_unsigned_once() -> None:
    """Say once per process that notifications go out unsigned."""
    with _unsigned_warning:
        if _unsigned_warned.is_set():
            return
        _unsigned_warned.set()
    logger.warning(
        "NOTIFY_SIGNING_SECRET is not set: notifications are sent without a Payment-Signature header,"
        " so receivers cannot tell them from forged ones"
    )


class HttpNotificationSender:
    """POSTs one notification to `{NOTIFICATION_SERVICE_URL}/v1/notifications`, signed when a secret is set."""

    def __init__(
        self, config: Config, session: requests.Session | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        """Bounded connect/read timeouts and the signing secret from config; `clock` gives unix time."""
        self._url = f"{config.NOTIFICATION_SERVICE_URL}/v1/notifications"
        self._timeout = (config.HTTP_CONNECT_TIMEOUT, config.HTTP_READ_TIMEOUT)
        self._session = session or internal_session()
        self._secret = config.NOTIFY_SIGNING_SECRET.encode() if config.NOTIFY_SIGNING_SECRET else None
        self._clock = clock
        if self._secret is None:
            _warn_unsigned_once()

    def send(self, notification_id: str, payload: dict[str, Any]) -> None:
        """Deliver, or raise DeliveryError with a short reason."""
        # Encoded once: these bytes are both what is signed and what is sent (requests would send a
        # str as Latin-1, and dump_json keeps non-ASCII characters).
        body = dump_json(payload).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": notification_id}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._secret, int(self._clock()), body)
        try:
            response = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout)
        except requests.RequestException as exc:
            raise DeliveryError(type(exc).__name__) from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter: base x 2^(attempt-1), capped, then scaled by 50-100%."""
        return min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


class _QuietInDispatcherLoop(logging.Filter):
    """Drops the pool's per-attempt warnings in a thread running `Dispatcher.run_forever`.

    That loop reports a database outage itself, once when it begins and once when it ends, instead
    of a warning on every poll.
    """

    def __init__(self) -> None:
        """No thread is quiet until it says so."""
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless this thread is in a dispatcher pass."""
        return not getattr(self.local, "quiet", False)


_POOL_QUIETER = _QuietInDispatcherLoop()
logging.getLogger(ConnectionPool.__module__).addFilter(_POOL_QUIETER)


def _outage_reason(exc: DatabaseUnavailableError) -> str:
    """The driver's error behind the outage (e.g. connection refused), else the error's own message."""
    cause = exc.__cause__
    text = str(cause).strip() if cause is not None else exc.message
    return " ".join(text.split())[:500] or type(cause or exc).__name__


class Dispatcher:
    """Delivers due outbox rows; run it as a thread in each worker or as a standalone process."""

    def __init__(self, pool: ConnectionPool, sender: HttpNotificationSender, outbox: Outbox, config: Config) -> None:
        """Keep collaborators and the retry settings."""
        self.pool = pool
        self.sender = sender
        self.outbox = outbox
        self.policy = RetryPolicy(config.NOTIFY_MAX_ATTEMPTS, config.NOTIFY_BACKOFF_BASE, config.NOTIFY_BACKOFF_MAX)
        self.batch_size = config.NOTIFY_BATCH_SIZE
        self.poll_seconds = config.NOTIFY_POLL_INTERVAL
        # Longer than one send can take, so a row is never sent by two dispatchers at once.
        self.lease_seconds = config.HTTP_CONNECT_TIMEOUT + config.HTTP_READ_TIMEOUT + 10
        self._rng = random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outage_since: float | None = None  # time.monotonic() when the current database outage began
        # The receiver going down is logged once, and coming back once with the count (not every retry).
        self.receiver = DependencyWatch("notification service", logger)
        self.schema = DependencyWatch("database schema", logger)

    def run_once(self) -> int:
        """Claim and attempt one batch of due notifications; return how many were attempted."""
        with self.pool.cursor() as cur:
            cur.execute(CLAIM_DUE, {"batch": self.batch_size, "lease": self.lease_seconds})
            claimed = cur.fetchall()
        for row in claimed:
            self._attempt(row)
        return len(claimed)

    def _attempt(self, row: dict[str, Any]) -> None:
        """Send one claimed row and record the result."""
        notification_id, event_type, attempts = row["notification_id"], row["event_type"], row["attempts"]
        try:
            self.sender.send(notification_id, row["payload"])
        except DeliveryError as exc:
            error = str(exc)[:500]
            self.receiver.failed(error, notification_id=notification_id)
            if attempts >= self.policy.max_attempts:
                self._execute(MARK_DEAD, {"notification_id": notification_id, "error": error})
                NOTIFICATIONS.labels(event_type, "dead").inc()
                logger.error(
                    "notification dead after its last attempt",
                    extra={"notification_id": notification_id, "attempts": attempts, "error": error},
                )
                return
            delay = self.policy.delay(attempts, self._rng)
            self._execute(SCHEDULE_RETRY, {"notification_id": notification_id, "error": error, "delay": delay})
            NOTIFICATIONS.labels(event_type, "retried").inc()
            logger.debug(
                "notification not delivered; will retry",
                extra={"notification_id": notification_id, "attempts": attempts, "retry_in": round(delay, 2),
                       "error": error},
            )  # fmt: skip
            return
        self.receiver.succeeded()
        self._execute(MARK_DELIVERED, {"notification_id": notification_id})
        NOTIFICATIONS.labels(event_type, "delivered").inc()
        logger.info("notification delivered", extra={"notification_id": notification_id, "attempts": attempts})

    def _execute(self, statement: str, params: dict[str, Any]) -> None:
        """Run one bookkeeping statement as its own transaction."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(statement, params)

    def run_forever(self) -> None:
        """Loop until stopped: drain what is due, then wait for a nudge or the poll interval.

        A database outage is logged once when it begins (WARNING, with the reason) and once when it
        ends (INFO, with its length), not on every poll, and counted in
        `notification_dispatcher_database_outages_total`.
        """
        while not self._stop.is_set():
            _POOL_QUIETER.local.quiet = True
            try:
                attempted = self.run_once()
            except DatabaseUnavailableError as exc:
                self._database_down(exc)
                attempted = 0
            except UNMIGRATED_ERRORS as exc:
                self.schema.failed(unmigrated_reason(exc), task="notification dispatcher")
                attempted = 0
            except Exception:
                logger.exception("notification dispatcher pass failed")
                attempted = 0
            else:
                self._database_up()
                self.schema.succeeded()
            finally:
                _POOL_QUIETER.local.quiet = False
            if attempted < self.batch_size:
                self.outbox.wake_event.wait(self.poll_seconds)
                self.outbox.wake_event.clear()

    def _database_down(self, exc: DatabaseUnavailableError) -> None:
        """Report the start of an outage (later failed passes of the same outage stay quiet)."""
        if self._outage_since is not None:
            return
        self._outage_since = time.monotonic()
        NOTIFICATION_DISPATCHER_DB_OUTAGES.inc()
        reason = _outage_reason(exc)
        logger.warning(
            "notification dispatcher cannot use the database; delivery paused until it can",
            extra={"reason": reason, "retry_every_seconds": self.poll_seconds},
        )

    def _database_up(self) -> None:
        """Report the end of an outage, if there was one."""
        if self._outage_since is None:
            return
        seconds = round(time.monotonic() - self._outage_since, 3)
        self._outage_since = None
        logger.info(
            "notification dispatcher reached the database again; delivery resumed", extra={"outage_seconds": seconds}
        )

    def start(self) -> None:
        """Run in a background thread of this process."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run_forever, name="notification-dispatcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to finish its current send and wait for it."""
        self._stop.set()
        self.outbox.wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


class NotificationAdmin:
    """Operator queries: dead notifications, re-queueing, backlog."""

    def __init__(self, pool: ConnectionPool) -> None:
        """Keep the pool."""
        self.pool = pool

    def dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest dead notifications."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(LIST_DEAD, {"limit": limit})
            return [dict(row) for row in cur.fetchall()]

    def requeue(self, ids: list[str] | None) -> list[str]:
        """Make dead notifications (the given ids, or all when None) due again with fresh attempts."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(REQUEUE_DEAD, {"all": ids is None, "ids": ids or []})
            return [row["notification_id"] for row in cur.fetchall()]
