"""Scenario 2: the trip service accepts connections and never answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2
import requests

from config import Config
from tests.fakes import FakeTripService
from tests.faults.load import ChargeClients, Verdict, check_against_database, first_success_after, keys_in_flight
from tests.helpers import Gunicorn

READ_TIMEOUT = Config.HTTP_READ_TIMEOUT  # the default
BREAKER_RESET = 2.0  # TRIP_SERVICE_BREAKER_RESET (the default)
# After the trip service answers again, a trial call already out may still wait its read timeout
# and fail, holding the circuit open for one more reset period: that is the end of the fault window.
WINDOW_AFTER = READ_TIMEOUT + BREAKER_RESET + 0.5
HANG_SECONDS = 8


def _seed_payment(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO payments (trip_id, amount, currency, method, status, reference)"
                " VALUES (999999, 10, 'INR', 'CASH', 'SUCCESS', 'PAY-FAULT-READ') RETURNING payment_id"
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_a_hung_trip_service_fails_charges_fast_and_reads_keep_answering(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    trips: FakeTripService,
    report: Callable[[Verdict], None],
) -> None:
    payment_id = _seed_payment(fault_dsn)
    server = fault_server()
    answers = trips.answers
    reads: list[tuple[float, float, int]] = []
    stop_reading = threading.Event()

    def read_payments() -> None:
        session = requests.Session()
        while not stop_reading.is_set():
            started = time.monotonic()
            try:
                status = session.get(f"{server.url}/v1/payments/{payment_id}", timeout=10).status_code
            except requests.RequestException:
                status = 0
            reads.append((started, time.monotonic(), status))
            time.sleep(0.05)  # the reader's pace: about 20 reads a second

    reader = threading.Thread(target=read_payments, daemon=True)
    reader.start()
    # More charging clients than the two workers have threads (2 x 4).
    clients = ChargeClients(server.url, count=16).start()
    time.sleep(3)  # steady load before the hang
    hang_from = time.monotonic()
    answers.delay = 3600  # accept, never answer
    time.sleep(HANG_SECONDS)  # the trip service hangs this long
    answers.delay = 0
    hang_to = time.monotonic()
    time.sleep(5)  # the load runs on, so the ledger shows the recovery
    ledger = clients.stop()
    stop_reading.set()
    reader.join()

    present, duplicates, orphans = check_against_database(fault_dsn, ledger, frozenset({payment_id}))
    unavailable = ledger.server_errors(503)
    reads_in_hang = [r for r in reads if hang_from <= r[0] <= hang_to]
    read_seconds = sorted(end - start for start, end, _ in reads_in_hang)
    slowest_read = read_seconds[-1]
    p95_read = read_seconds[int(len(read_seconds) * 0.95)]
    recovery = first_success_after(ledger, hang_to)
    report(
        Verdict(
            "2. trip service hangs, 8 s", len(ledger.attempts), len(ledger.acknowledged), present, duplicates,
            orphans, sum(k.stuck for k in ledger.keys), len(unavailable), len(ledger.other_5xx()), recovery,
            f"slowest 503 {max(a.seconds for a in unavailable):.2f} s (read timeout {READ_TIMEOUT} s); last 503 "
            f"sent {max(a.started for a in unavailable) - hang_to:+.2f} s after the hang ended; "
            f"{len(reads_in_hang)} GET /v1/payments/<id> during the hang, p95 {p95_read:.3f} s, "
            f"slowest {slowest_read:.2f} s",
        )
    )  # fmt: skip

    assert unavailable, "no charge noticed the hang"
    assert {a.code for a in unavailable} == {"trip_service_unavailable"}
    assert all(a.seconds <= READ_TIMEOUT + 1 for a in unavailable)
    assert all(hang_from <= a.ended and a.started <= hang_to + WINDOW_AFTER for a in unavailable), "503 late"
    assert ledger.other_5xx() == []
    assert len(reads_in_hang) >= 20 and all(status == 200 for _, _, status in reads_in_hang)
    # No read waited out a hung call; the slowest ones waited behind a few bulkhead queue timeouts
    # in the half second before the circuit opened.
    assert slowest_read < READ_TIMEOUT, "a read queued behind a hung charge"
    assert p95_read < 0.5
    assert all(k.status in (201, 202) for k in ledger.keys)
    assert present == len(ledger.acknowledged)
    assert (duplicates, orphans) == (0, 0)
    assert keys_in_flight(fault_dsn) == 0
    assert recovery is not None and recovery <= 5
