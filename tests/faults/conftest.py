"""Fault-test fixtures: a PostgreSQL of their own, gunicorn on it, controllable fakes, a report table.

Everything here runs under the `faults` marker (`make test-faults`; `make test` and .ci/run include
it). The service runs as in production (gunicorn, 2 workers, gthread) against a database server
the tests crash and restart; the trip and notification services are fakes the tests control.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from database.migrate import apply_migrations
from scripts.with_pgbouncer import PgBouncer, binary
from tests.fakes import EveryTripCompleted, FakeNotificationService, FakeTripService
from tests.faults.load import Verdict
from tests.faults.postgres import OwnPostgres
from tests.helpers import ROOT, TRUNCATE_DATA, Gunicorn, start_gunicorn

DATABASE = "payments_faults"
REPORT: list[Verdict] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/faults with `faults`."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    """A running PostgreSQL server of this run's own, with a migrated database `payments_faults`."""
    server = OwnPostgres()
    try:
        server.init()
        server.start()
        conn = psycopg2.connect(server.dsn("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
        conn.close()
        conn = psycopg2.connect(server.dsn(DATABASE))
        try:
            apply_migrations(conn)
        finally:
            conn.close()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def fault_dsn(own_postgres: OwnPostgres) -> str:
    """The fault database, running and emptied before the test."""
    if not own_postgres.running():
        own_postgres.start()
    conn = psycopg2.connect(own_postgres.dsn(DATABASE))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(TRUNCATE_DATA)
    finally:
        conn.close()
    return own_postgres.dsn(DATABASE)


@pytest.fixture
def pgbouncer(own_postgres: OwnPostgres) -> Iterator[PgBouncer]:
    """PgBouncer in front of the fault database, configured as scripts/with_pgbouncer.py and docs/operations.md say."""
    if binary() is None:
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer)")
    with PgBouncer("127.0.0.1", own_postgres.port, "postgres") as bouncer:
        yield bouncer


# The only settings every scenario changes: a gateway that always approves, so each scenario's
# outcomes are exact, and quieter logs. Timeouts and the lock timeout stay at their defaults; a
# scenario that needs another value passes it and says why (see docs/testing.md, "Fault scenarios").
TEST_SETTINGS = {"GATEWAY_SUCCESS_RATE": "1.0", "LOG_LEVEL": "WARNING"}


@pytest.fixture
def fault_server(
    fault_dsn: str, trips: FakeTripService, notifications: FakeNotificationService
) -> Iterator[Callable[..., Gunicorn]]:
    """Factory: gunicorn on the fault database with the given environment; stopped afterwards.

    The server talks to the `trips` fake, which knows every trip as completed
    (`trips.answers.delay` slows or hangs it), and to the `notifications` fake, unless the
    environment given names other URLs. `defaults=True` leaves out TEST_SETTINGS and the test
    servers' quiet logs, so every setting is the default except rate limiting, which the helper
    turns off unless asked (a test's clients all come from one address; see docs/testing.md).
    """
    trips.answers = EveryTripCompleted()
    servers: list[Gunicorn] = []

    def start(workers: int = 2, threads: int = 4, defaults: bool = False, **env: object) -> Gunicorn:
        base = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
        base.update(DATABASE_URL=fault_dsn, TRIP_SERVICE_URL=trips.url, NOTIFICATION_SERVICE_URL=notifications.url)
        if defaults:
            base["LOG_LEVEL"] = "INFO"
        else:
            base.update(TEST_SETTINGS)
        base.update({k: str(v) for k, v in env.items()})
        server = start_gunicorn(base, workers=workers, threads=threads)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def report() -> Callable[[Verdict], None]:
    """Add a row to the fault report printed at the end of the run."""
    return REPORT.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault report: one row per scenario."""
    if not REPORT:
        return
    header = (
        "scenario", "sent", "acked", "acked+present", "duplicates", "orphans", "stuck", "503s", "other 5xx",
        "recovery s",
    )  # fmt: skip
    rows = [
        (v.scenario, v.sent, v.acknowledged, v.present, v.duplicates, v.orphans, v.stuck, v.status_503, v.other_5xx,
         "-" if v.recovery_seconds is None else f"{v.recovery_seconds:.2f}")
        for v in REPORT
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    notes = [f"- {v.scenario}: {v.notes}" for v in REPORT if v.notes]
    text = "\n".join(lines + (["", *notes] if notes else []))
    terminalreporter.section("fault report")
    terminalreporter.write_line(text)
    out = ROOT / ".ci" / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fault-report.md").write_text(text + "\n")
