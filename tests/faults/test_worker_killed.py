"""Scenario 3: gunicorn workers are SIGKILLed while charges are in flight."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tests.fakes import FakeTripService
from tests.faults.load import ChargeClients, Verdict, check_against_database, first_success_after, keys_in_flight
from tests.helpers import Gunicorn

# A killed worker cannot give its claims back; they free themselves after IDEMPOTENCY_LOCK_TIMEOUT.
# The default (60 s) would keep every orphaned key's client waiting a minute, past its deadline.
LOCK_TIMEOUT = 5


def test_killed_workers_are_replaced_and_retries_end_in_exactly_one_payment_per_key(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    trips: FakeTripService,
    report: Callable[[Verdict], None],
) -> None:
    # A slow trip lookup keeps several charges in flight in every worker at any moment.
    server = fault_server(IDEMPOTENCY_LOCK_TIMEOUT=LOCK_TIMEOUT)
    trips.answers.delay = 0.05
    clients = ChargeClients(server.url, count=8).start()
    time.sleep(3)  # steady load before the first kill

    killed: list[int] = []
    kill_times: list[float] = []
    for _ in range(3):
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        kill_times.append(time.monotonic())
        assert server.wait_for_workers(timeout=30), "gunicorn did not replace the killed worker"
        time.sleep(2)  # load on the new worker, so the next kill finds charges in flight again
    time.sleep(LOCK_TIMEOUT + 1)  # claims orphaned by the last kill free themselves meanwhile
    ledger = clients.stop()

    present, duplicates, orphans = check_against_database(fault_dsn, ledger)
    dropped = [a for a in ledger.attempts if a.status == 0]
    in_use = [a for a in ledger.attempts if a.code == "idempotency_key_in_use"]
    recovery = first_success_after(ledger, kill_times[-1])
    report(
        Verdict(
            "3. worker SIGKILL x3", len(ledger.attempts), len(ledger.acknowledged), present, duplicates, orphans,
            sum(k.stuck for k in ledger.keys), len(ledger.server_errors(503)), len(ledger.other_5xx()), recovery,
            f"{len(dropped)} requests lost with their worker and retried; {len(in_use)} answers 409 "
            f"idempotency_key_in_use while an orphaned claim waited out the {LOCK_TIMEOUT} s lock timeout",
        )
    )  # fmt: skip

    assert dropped, "no request was in flight in a killed worker"
    assert not set(killed) & set(server.worker_pids())
    assert len(server.worker_pids()) == 2
    assert ledger.other_5xx() == [] and ledger.server_errors(503) == []
    assert all(k.status in (201, 202) for k in ledger.keys), "a key ended without an acknowledgement"
    assert present == len(ledger.acknowledged)
    assert (duplicates, orphans) == (0, 0)
    assert keys_in_flight(fault_dsn) == 0
    assert recovery is not None and recovery <= 5
