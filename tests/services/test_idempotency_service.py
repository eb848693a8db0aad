"""IdempotencyService against the real database: claims, recovery points and releases."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from config import Config
from database.connection import ConnectionPool
from services.idempotency_service import Claim, IdempotencyKeyInUseError, IdempotencyService, fingerprint

FP = fingerprint({"trip_id": 7})


@pytest.fixture
def pool(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(test_config.get_database_uri(), size=2, wait_timeout=1, connect_timeout=2)
    yield pool
    pool.close()


def _payment(db: psycopg2.extensions.connection) -> int:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, currency, method, status, reference)"
            " VALUES (7, 10, 'INR', 'CARD', 'PENDING', 'PAY-T-1') RETURNING payment_id"
        )
        return cur.fetchone()[0]


def test_a_released_claim_frees_the_key_for_a_retry(pool: ConnectionPool) -> None:
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60)
    claim = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(claim, Claim)

    service.release(claim)

    assert isinstance(service.claim("client", "k-1", FP, "/v1/payments/charge"), Claim)


def test_a_claim_whose_attempt_was_committed_survives_a_release_by_a_request_that_missed_the_commit(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    # The request recorded its attempt, but the COMMIT's answer was lost, so it still holds a Claim
    # without payment_id and tries to release it: the key must stay bound to that payment.
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=1)
    claim = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(claim, Claim)
    payment_id = _payment(db)
    with pool.cursor() as cur:
        assert service.record_payment(cur, claim, payment_id)

    service.release(claim)

    with pytest.raises(IdempotencyKeyInUseError):
        service.claim("client", "k-1", FP, "/v1/payments/charge")
    with db.cursor() as cur:  # the holder is gone: age the lock past the timeout
        cur.execute("UPDATE idempotency_keys SET locked_at = now() - interval '5 seconds'")
    resumed = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(resumed, Claim)
    assert resumed.payment_id == payment_id
