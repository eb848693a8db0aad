"""Scenario 5: more concurrent slow requests than database connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2
import requests

from tests.faults.load import (
    Attempt,
    ChargeClients,
    Verdict,
    check_against_database,
    first_success_after,
    keys_in_flight,
)
from tests.helpers import Gunicorn

POOL_SIZE = 2  # connections per worker
POOL_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 3.0
LOCK_SECONDS = 6


def test_an_exhausted_pool_answers_503_after_the_pool_timeout_and_recovers_fully(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    report: Callable[[Verdict], None],
) -> None:
    # 24 threads per worker: even if the kernel hands every one of the 24 concurrent requests (8
    # charging clients, 16 reads) to the same worker, none waits for a thread, so every wait measured
    # here is the service's own (pool timeout or statement timeout), not gunicorn's queue. (With 16,
    # an uneven spread once left a read queued behind busy threads until the lock went away.)
    server = fault_server(
        threads=24,
        DB_POOL_SIZE=POOL_SIZE,
        DB_POOL_TIMEOUT=POOL_TIMEOUT,
        DB_STATEMENT_TIMEOUT_MS=int(STATEMENT_TIMEOUT * 1000),
    )
    clients = ChargeClients(server.url, count=8).start()
    time.sleep(2)  # steady load before the lock

    # A migration-style lock makes every statement on payments wait: each request holding a
    # connection is slow, and 24 concurrent requests want far more than 2 x 2 connections.
    locker = psycopg2.connect(fault_dsn)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
    locked_at = time.monotonic()
    reads: list[Attempt] = []
    reads_lock = threading.Lock()

    def read() -> None:
        started = time.monotonic()
        try:
            response = requests.get(f"{server.url}/v1/payments/1", timeout=15)
            attempt = Attempt(started, time.monotonic(), response.status_code, response.json().get("code"))
        except requests.RequestException as exc:
            attempt = Attempt(started, time.monotonic(), 0, error=type(exc).__name__)
        with reads_lock:
            reads.append(attempt)

    burst = [threading.Thread(target=read) for _ in range(16)]
    for thread in burst:
        thread.start()
    time.sleep(LOCK_SECONDS)  # the lock is held this long
    locker.rollback()  # the lock goes away
    released_at = time.monotonic()
    locker.close()
    for thread in burst:
        thread.join()
    time.sleep(5)  # the load runs on, so the ledger shows the recovery
    ledger = clients.stop()
    after = [requests.get(f"{server.url}/v1/payments/{k.payment_id}", timeout=5) for k in ledger.acknowledged[-50:]]

    present, duplicates, orphans = check_against_database(fault_dsn, ledger)
    unavailable = ledger.server_errors(503) + [r for r in reads if r.status == 503]
    recovery = first_success_after(ledger, released_at)
    report(
        Verdict(
            "5. pool exhaustion (2 conns/worker, 24 threads)", len(ledger.attempts) + len(reads),
            len(ledger.acknowledged), present, duplicates, orphans, sum(k.stuck for k in ledger.keys),
            len(unavailable), len(ledger.other_5xx()) + sum(r.status > 503 or r.status == 500 for r in reads),
            recovery,
            f"burst of 16 reads: {sum(r.status == 503 for r in reads)} x 503, slowest "
            f"{max(r.seconds for r in reads):.2f} s (pool timeout {POOL_TIMEOUT} s, statement timeout "
            f"{STATEMENT_TIMEOUT} s); all 50 reads after the lock 200: {all(r.status_code == 200 for r in after)}",
        )
    )  # fmt: skip

    assert len(reads) == 16 and all(r.status == 503 and r.code == "database_unavailable" for r in reads)
    # A read waits for a connection (pool timeout) and may then hold it through a statement timeout.
    # A charge borrows up to three times (claim, attempt, releasing the claim) and runs one blocked statement.
    assert all(r.seconds <= POOL_TIMEOUT + STATEMENT_TIMEOUT + 0.5 for r in reads)
    assert all(a.seconds <= 3 * POOL_TIMEOUT + STATEMENT_TIMEOUT + 0.5 for a in ledger.attempts)
    assert all(locked_at - 1 <= a.ended and a.started <= released_at for a in unavailable), "503 outside window"
    assert ledger.other_5xx() == []
    assert recovery is not None and recovery <= 5
    assert all(r.status_code == 200 for r in after)
    assert all(k.status in (201, 202) for k in ledger.keys)
    assert present == len(ledger.acknowledged)
    assert (duplicates, orphans) == (0, 0)
    assert keys_in_flight(fault_dsn) == 0
