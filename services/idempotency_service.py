"""Idempotency keys stored in PostgreSQL, after Stripe's design and Brandur Leach's recovery points.

A request first *claims* its key with one atomic INSERT ... ON CONFLICT. The claim is then either
completed with the final response (replayed byte for byte to every later request with the same
key and body) or given back when the request answers without one: deleted if no payment attempt
was recorded (a corrected retry may use the key), else unlocked with its recovery point kept, so
the next retry resumes the attempt at once instead of waiting out the lock. When the database is
away, that last write is retried by a background thread of the process until it is written
(`DeferredWrites`), so a request that answered never holds its key longer than the outage. Only a
claim whose process died waits for IDEMPOTENCY_LOCK_TIMEOUT; the taker then resumes from the
recovery point rather than charging again.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from database.pool import ASYNC_COMMIT, ConnectionPool, DatabaseUnavailableError
from database.prepared import Prepared
from utils.errors import DomainError
from utils.logger import get_logger

logger = get_logger(__name__)

# Claim the key. An existing row is taken over only when it has expired (it counts as new), or by
# a request with the same body when it is a claim given back by a request that answered (unlocked)
# or one abandoned for longer than the lock timeout (its process died).
CLAIM_KEY = Prepared("""
INSERT INTO idempotency_keys AS k
       (scope, key_hash, request_fingerprint, request_path, lock_token, locked_at, expires_at)
VALUES (%(scope)s, %(key_hash)s, %(fingerprint)s, %(path)s, %(token)s, now(),
        now() + make_interval(secs => %(ttl)s))
ON CONFLICT (scope, key_hash) DO UPDATE
   SET lock_token = EXCLUDED.lock_token,
       locked_at = EXCLUDED.locked_at,
       request_fingerprint = EXCLUDED.request_fingerprint,
       request_path = EXCLUDED.request_path,
       payment_id = CASE WHEN k.expires_at <= now() THEN NULL ELSE k.payment_id END,
       refund_id = CASE WHEN k.expires_at <= now() THEN NULL ELSE k.refund_id END,
       response_status = NULL,
       response_body = NULL,
       completed_at = NULL,
       created_at = CASE WHEN k.expires_at <= now() THEN now() ELSE k.created_at END,
       expires_at = CASE WHEN k.expires_at <= now() THEN EXCLUDED.expires_at ELSE k.expires_at END
 WHERE k.expires_at <= now()
    OR (k.response_status IS NULL
        AND (k.lock_token IS NULL OR k.locked_at < now() - make_interval(secs => %(lock_timeout)s))
        AND k.request_fingerprint = EXCLUDED.request_fingerprint)
RETURNING k.payment_id, k.refund_id
""")
SELECT_KEY = Prepared("""
SELECT request_fingerprint, response_status, response_body
FROM idempotency_keys
WHERE scope = %(scope)s AND key_hash = %(key_hash)s
""")
# Every write below is conditional on our lock token: a request that lost its claim to a
# takeover can no longer touch the row.
RECORD_RECOVERY_POINT = Prepared("""
UPDATE idempotency_keys SET payment_id = %(payment_id)s
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
""")
RECORD_REFUND_RECOVERY_POINT = Prepared("""
UPDATE idempotency_keys SET refund_id = %(refund_id)s
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
""")
# A refund the gateway refused is not a stored outcome: the key is forgotten in the transaction that
# records the refusal, so a retry with it makes a new attempt.
FORGET_KEY = Prepared("""
DELETE FROM idempotency_keys WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
""")
COMPLETE_KEY = Prepared("""
UPDATE idempotency_keys
   SET response_status = %(status)s, response_body = %(body)s, completed_at = now(),
       lock_token = NULL, locked_at = NULL
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
""")
# Giving a claim back is two statements in one transaction, decided by the row itself rather than
# by what this request believes: the COMMIT that recorded the attempt may have succeeded while its
# acknowledgement was lost (connection dropped). A claim without an attempt is deleted; one with
# an attempt is only unlocked, since deleting it would orphan the payment; a retry resumes it.
RELEASE_KEY = Prepared("""
DELETE FROM idempotency_keys
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
  AND payment_id IS NULL AND refund_id IS NULL
""")
UNLOCK_KEY = Prepared("""
UPDATE idempotency_keys SET lock_token = NULL, locked_at = NULL
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
  AND (payment_id IS NOT NULL OR refund_id IS NOT NULL)
""")

RETRY_AFTER_SECONDS = 1


class IdempotencyKeyReusedError(DomainError):
    """The key was used before with a different request body."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        """The same sentence for every such key."""
        super().__init__("This idempotency key was already used with a different request body.")


class IdempotencyKeyInUseError(DomainError):
    """Another request with the same key is still being processed."""

    code = "idempotency_key_in_use"

    retry_after = RETRY_AFTER_SECONDS

    def __init__(self) -> None:
        """The client is told when to retry (`retry_after`, sent as Retry-After)."""
        super().__init__("A request with this idempotency key is still in progress; retry shortly.")


def hash_key(key: str) -> str:
    """SHA-256 of the client's key; the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the normalised request body (sorted keys, no white space, amounts as strings)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A final response recorded under a key."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """An HTTP answer of an idempotent operation: status, exact body text, and whether it is a replay."""

    status_code: int
    body: str
    replayed: bool = False


@dataclass(slots=True)
class Claim:
    """A request's hold on a key.

    `payment_id` is the recorded charge attempt and `refund_id` the recorded refund attempt (set
    when resuming one); `finishing_later` means the
    outcome waits in DeferredWrites to be stored, so the claim must not be given back meanwhile.
    """

    scope: str
    key_hash: str
    token: str
    payment_id: int | None = None
    refund_id: int | None = None
    finishing_later: bool = False

    def params(self) -> dict[str, Any]:
        """Parameters that identify the claimed row."""
        return {"scope": self.scope, "key_hash": self.key_hash, "token": self.token}


class DeferredWrites:
    """Writes that must happen but met an unavailable database, retried by one thread until written.

    A request that answered 503 because the database went away may still owe a write that frees
    its idempotency key (giving the claim back, or storing a gateway verdict it already has). The
    process is alive, so it keeps trying, every `interval` seconds, until the database is back.
    Only a killed process loses them; its claims then wait for the lock timeout.
    """

    def __init__(self, interval: float = 0.5) -> None:
        """Nothing pending; the thread starts with the first deferred write (after any fork)."""
        self.interval = interval
        self._pending: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, what: str, write: Callable[[], None]) -> None:
        """Keep `write` until it runs without DatabaseUnavailableError; `what` names it in logs."""
        with self._lock:
            self._pending.append((what, write))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deferred-writes", daemon=True)
                self._thread.start()
        logger.warning("database unavailable: write deferred until it returns", extra={"write": what})

    def pending(self) -> int:
        """How many writes wait for the database."""
        with self._lock:
            return len(self._pending)

    def run_once(self) -> int:
        """Try every pending write once; return how many are still pending."""
        with self._lock:
            batch, self._pending = self._pending, []
        kept: list[tuple[str, Callable[[], None]]] = []
        for index, (what, write) in enumerate(batch):
            try:
                write()
            except DatabaseUnavailableError:
                # Still away: keep this and everything after it for the next round.
                kept.extend(batch[index:])
                break
            except Exception:
                # Not an outage: retrying cannot help. The lock timeout frees what it held.
                logger.exception("deferred write failed; dropped", extra={"write": what})
            else:
                logger.info("deferred write done", extra={"write": what})
        with self._lock:
            self._pending = kept + self._pending
            return len(self._pending)

    def _run(self) -> None:
        """Retry until stopped."""
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self.run_once()

    def stop(self, timeout: float = 5.0) -> None:
        """Make one last attempt and stop the thread."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)


class IdempotencyService:
    """Claims, completes and gives back idempotency keys."""

    def __init__(
        self, pool: ConnectionPool, ttl_seconds: int, lock_timeout_seconds: int, deferred: DeferredWrites | None = None
    ) -> None:
        """Keep the pool, the two time limits and where writes wait out a database outage."""
        self.pool = pool
        self.ttl_seconds = ttl_seconds
        self.lock_timeout_seconds = lock_timeout_seconds
        self.deferred = deferred or DeferredWrites()

    def claim(self, scope: str, key: str, request_fingerprint: str, path: str) -> Claim | StoredResponse:
        """Claim the key for this request, or return the stored final response to replay.

        Raises IdempotencyKeyReusedError (other body) or IdempotencyKeyInUseError (still running).
        """
        key_hash = hash_key(key)
        token = str(uuid.uuid4())
        params = {
            "scope": scope,
            "key_hash": key_hash,
            "fingerprint": request_fingerprint,
            "path": path,
            "token": token,
            "ttl": self.ttl_seconds,
            "lock_timeout": self.lock_timeout_seconds,
        }
        # Two rounds: if the row we collided with is released between our two statements, claim again.
        for _ in range(2):
            try:
                with self.pool.cursor(single_statement=True) as cur:
                    # Not waiting for the flush is safe: the attempt that would follow commits
                    # synchronously before any gateway call, which flushes this claim first. A claim
                    # lost in a crash therefore had nothing recorded under it; the client's retry
                    # simply claims the key again.
                    cur.execute_together((ASYNC_COMMIT, {}), (CLAIM_KEY, params))
                    claimed = cur.fetchone()
            except DatabaseUnavailableError:
                # The claim may have been written with only its acknowledgement lost: give it back.
                self.give_back(Claim(scope, key_hash, token))
                raise
            if claimed is not None:
                return Claim(scope, key_hash, token, claimed["payment_id"], claimed["refund_id"])
            with self.pool.cursor(single_statement=True) as cur:
                cur.execute(SELECT_KEY, params)
                existing = cur.fetchone()
            if existing is None:
                continue
            if existing["request_fingerprint"] != request_fingerprint:
                raise IdempotencyKeyReusedError()
            if existing["response_status"] is None:
                raise IdempotencyKeyInUseError()
            return StoredResponse(existing["response_status"], existing["response_body"])
        raise IdempotencyKeyInUseError()

    def record_payment(self, cur: Any, claim: Claim, payment_id: int) -> bool:
        """Note, in the caller's transaction, that the claim's payment attempt exists (the recovery point).

        Returns False when the claim is no longer ours (taken over after the lock timeout).
        """
        cur.execute(RECORD_RECOVERY_POINT, {**claim.params(), "payment_id": payment_id})
        return cur.rowcount == 1

    def record_refund(self, cur: Any, claim: Claim, refund_id: int) -> bool:
        """Note, in the caller's transaction, that the claim's refund attempt exists (its recovery point)."""
        cur.execute(RECORD_REFUND_RECOVERY_POINT, {**claim.params(), "refund_id": refund_id})
        return cur.rowcount == 1

    def forget(self, cur: Any, claim: Claim) -> None:
        """Delete the claim in the caller's transaction: the request ended without an outcome worth replaying."""
        cur.execute(FORGET_KEY, claim.params())

    def complete(self, cur: Any, claim: Claim, response: StoredResponse) -> bool:
        """Store the final response, in the caller's transaction, and drop the lock.

        Returns False when the claim is no longer ours (taken over after the lock timeout).
        """
        cur.execute(COMPLETE_KEY, {**claim.params(), "status": response.status, "body": response.body})
        return cur.rowcount == 1

    def release(self, claim: Claim) -> None:
        """Give the claim back now: deleted without a recorded attempt, else unlocked for a retry to resume."""
        with self.pool.cursor() as cur:
            cur.execute(RELEASE_KEY, claim.params())
            cur.execute(UNLOCK_KEY, claim.params())

    def give_back(self, claim: Claim) -> None:
        """Release the claim of a request answering without a final outcome: now, or once the database is back."""
        try:
            self.release(claim)
        except DatabaseUnavailableError:
            self.deferred.add("give back an idempotency claim", lambda: self.release(claim))
        except Exception:
            # Called while another error is being answered; that one is what the client must see.
            logger.exception("could not give back an idempotency claim; it frees itself after the lock timeout")
