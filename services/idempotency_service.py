"""Idempotency keys stored in PostgreSQL, after Stripe's design and Brandur Leach's recovery points.

A request first *claims* its key with one atomic INSERT ... ON CONFLICT. The claim is then either
completed with the final response (replayed byte for byte to every later request with the same
key and body) or released so the client can retry. A claim whose request died is taken over after
IDEMPOTENCY_LOCK_TIMEOUT seconds; if that request had already recorded a payment attempt, the
taker finishes from that recovery point rather than charging again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from database.connection import ConnectionPool, Prepared
from utils.errors import AppError
from utils.logger import get_logger

logger = get_logger(__name__)

# Claim the key. An existing row is taken over only when it has expired (it counts as new) or
# when it is a claim abandoned for longer than the lock timeout by a request with the same body.
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
       response_status = NULL,
       response_body = NULL,
       completed_at = NULL,
       created_at = CASE WHEN k.expires_at <= now() THEN now() ELSE k.created_at END,
       expires_at = CASE WHEN k.expires_at <= now() THEN EXCLUDED.expires_at ELSE k.expires_at END
 WHERE k.expires_at <= now()
    OR (k.response_status IS NULL
        AND k.locked_at < now() - make_interval(secs => %(lock_timeout)s)
        AND k.request_fingerprint = EXCLUDED.request_fingerprint)
RETURNING k.payment_id
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
COMPLETE_KEY = Prepared("""
UPDATE idempotency_keys
   SET response_status = %(status)s, response_body = %(body)s, completed_at = now(),
       lock_token = NULL, locked_at = NULL
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
""")
# A claim that reached its recovery point is never released, even if this request believes it did
# not: the COMMIT that recorded the attempt may have succeeded while its acknowledgement was lost
# (connection dropped). Deleting the row would orphan the payment; kept, a retry resumes it.
RELEASE_KEY = Prepared("""
DELETE FROM idempotency_keys
WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s AND payment_id IS NULL
""")
PURGE_EXPIRED = "DELETE FROM idempotency_keys WHERE expires_at <= now()"

RETRY_AFTER_SECONDS = 1


class IdempotencyKeyReusedError(AppError):
    """The key was used before with a different request body."""

    def __init__(self) -> None:
        """422 idempotency_key_reused."""
        super().__init__(
            "This idempotency key was already used with a different request body.",
            status_code=422,
            code="idempotency_key_reused",
        )


class IdempotencyKeyInUseError(AppError):
    """Another request with the same key is still being processed."""

    def __init__(self) -> None:
        """409 idempotency_key_in_use with Retry-After."""
        super().__init__(
            "A request with this idempotency key is still in progress; retry shortly.",
            status_code=409,
            code="idempotency_key_in_use",
        )
        self.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)


def hash_key(key: str) -> str:
    """SHA-256 of the client's key; the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the normalised request body (sorted keys, no white space, amounts as strings)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    """A final response recorded under a key."""

    status: int
    body: str


@dataclass(frozen=True)
class Outcome:
    """An HTTP answer of an idempotent operation: status, exact body text, and whether it is a replay."""

    status_code: int
    body: str
    replayed: bool = False


@dataclass
class Claim:
    """A request's hold on a key; `payment_id` is set when resuming an abandoned attempt."""

    scope: str
    key_hash: str
    token: str
    payment_id: int | None = None

    def params(self) -> dict[str, Any]:
        """Parameters that identify the claimed row."""
        return {"scope": self.scope, "key_hash": self.key_hash, "token": self.token}


class IdempotencyService:
    """Claims, completes and releases idempotency keys."""

    def __init__(self, pool: ConnectionPool, ttl_seconds: int, lock_timeout_seconds: int) -> None:
        """Keep the pool and the two time limits."""
        self.pool = pool
        self.ttl_seconds = ttl_seconds
        self.lock_timeout_seconds = lock_timeout_seconds

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
            with self.pool.cursor(single_statement=True) as cur:
                cur.execute(CLAIM_KEY, params)
                claimed = cur.fetchone()
            if claimed is not None:
                return Claim(scope, key_hash, token, claimed["payment_id"])
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

    def complete(self, cur: Any, claim: Claim, response: StoredResponse) -> bool:
        """Store the final response, in the caller's transaction, and drop the lock.

        Returns False when the claim is no longer ours (taken over after the lock timeout).
        """
        cur.execute(COMPLETE_KEY, {**claim.params(), "status": response.status, "body": response.body})
        return cur.rowcount == 1

    def release(self, claim: Claim) -> None:
        """Forget the claim so the client may retry (the request ended without a final outcome)."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(RELEASE_KEY, claim.params())

    def release_quietly(self, claim: Claim) -> None:
        """Release a claim; if even that fails (database down), the lock timeout frees it later."""
        try:
            self.release(claim)
        except Exception:
            logger.warning("could not release idempotency key; it frees itself after the lock timeout")

    def purge_expired(self) -> int:
        """Delete expired keys; return how many."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(PURGE_EXPIRED)
            return cur.rowcount
