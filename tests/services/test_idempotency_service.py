"""IdempotencyService against the real database: claims, recovery points and releases."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from config import Config
from database.pool import ConnectionPool
from services.idempotency_service import (
    Claim,
    DeferredWrites,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    IdempotencyService,
    fingerprint,
)
from tests.helpers import all_at_once, closed_port

FP = fingerprint({"trip_id": 7})


@pytest.fixture
def pool(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(test_config.get_database_uri(), size=2, wait_timeout=1, connect_timeout=2)
    yield pool
    pool.close()


def _payment(db: psycopg2.extensions.connection, n: int = 1) -> int:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, currency, method, status, reference)"
            " VALUES (%s, 10, 'INR', 'CARD', 'PENDING', %s) RETURNING payment_id",
            (7 + n, f"PAY-T-{n}"),
        )
        return cur.fetchone()[0]


def _claim_with_attempt(
    service: IdempotencyService, pool: ConnectionPool, db: psycopg2.extensions.connection, key: str = "k-1", n: int = 1
) -> tuple[Claim, int]:
    """Claim `key` and record a payment attempt under it (the recovery point); return both."""
    claim = service.claim("client", key, FP, "/v1/payments/charge")
    assert isinstance(claim, Claim)
    payment_id = _payment(db, n)
    with pool.cursor() as cur:
        assert service.record_payment(cur, claim, payment_id)
    return claim, payment_id


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
    # without payment_id and gives it back: the key must stay bound to that payment, and the
    # client's retry resumes it at once rather than after the lock timeout.
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60)
    claim, payment_id = _claim_with_attempt(service, pool, db)

    service.release(claim)

    resumed = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(resumed, Claim)
    assert resumed.payment_id == payment_id


def test_a_given_back_claim_with_an_attempt_is_not_resumed_by_another_body(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60)
    claim, _ = _claim_with_attempt(service, pool, db)
    service.release(claim)

    with pytest.raises(IdempotencyKeyReusedError):
        service.claim("client", "k-1", fingerprint({"trip_id": 8}), "/v1/payments/charge")


def test_a_claim_held_by_a_running_request_is_in_use_until_its_lock_times_out(
    pool: ConnectionPool, db: psycopg2.extensions.connection
) -> None:
    # Only a claim nobody gives back (its process was killed) waits for the lock timeout.
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60)
    _, payment_id = _claim_with_attempt(service, pool, db)

    with pytest.raises(IdempotencyKeyInUseError):
        service.claim("client", "k-1", FP, "/v1/payments/charge")
    with db.cursor() as cur:  # the holder is gone: age the lock past the timeout
        cur.execute("UPDATE idempotency_keys SET locked_at = now() - interval '61 seconds'")
    resumed = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(resumed, Claim)
    assert resumed.payment_id == payment_id


def test_a_give_back_the_database_missed_is_written_once_it_returns(pool: ConnectionPool) -> None:
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60, deferred=DeferredWrites(60))
    claim = service.claim("client", "k-1", FP, "/v1/payments/charge")
    assert isinstance(claim, Claim)
    away = ConnectionPool(f"postgresql://postgres@127.0.0.1:{closed_port()}/x", size=1, wait_timeout=1,
                          connect_timeout=1)  # fmt: skip
    service.pool = away  # the database is unreachable while the request answers

    service.give_back(claim)

    assert service.deferred.pending() == 1
    assert service.deferred.run_once() == 1  # still away: kept
    service.pool = pool  # the database is back
    assert service.deferred.run_once() == 0
    assert isinstance(service.claim("client", "k-1", FP, "/v1/payments/charge"), Claim)
    service.deferred.stop()
    away.close()


def test_a_deferred_write_that_fails_for_another_reason_is_dropped_not_retried_forever() -> None:
    deferred = DeferredWrites(60)
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    deferred.add("broken", broken)

    assert deferred.run_once() == 0
    assert calls == [1]
    deferred.stop()


def test_simultaneous_retries_of_a_given_back_claim_resume_it_exactly_once(
    test_config: Config, db: psycopg2.extensions.connection
) -> None:
    # The takeover of an unlocked claim is one INSERT ... ON CONFLICT DO UPDATE on the key's primary
    # key: the row lock lets one retry in, the others then find it locked. Many rounds, since a
    # race test passing once proves little.
    pool = ConnectionPool(test_config.get_database_uri(), size=20, wait_timeout=5, connect_timeout=2)
    service = IdempotencyService(pool, ttl_seconds=3600, lock_timeout_seconds=60)
    for round_number in range(30):
        key = f"k-{round_number}"
        claim, _ = _claim_with_attempt(service, pool, db, key, round_number)
        service.release(claim)

        outcomes = all_at_once([lambda k=key: _try_claim(service, k)] * 20)

        resumed = [o for o in outcomes if isinstance(o, Claim)]
        assert len(resumed) == 1, outcomes
        assert all(isinstance(o, IdempotencyKeyInUseError) for o in outcomes if not isinstance(o, Claim))
    pool.close()


def _try_claim(service: IdempotencyService, key: str) -> Claim | Exception:
    try:
        claimed = service.claim("client", key, FP, "/v1/payments/charge")
    except IdempotencyKeyInUseError as exc:
        return exc
    assert isinstance(claimed, Claim)
    return claimed
