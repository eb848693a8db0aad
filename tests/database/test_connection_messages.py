"""Why a connection failed, in an operator's words: where (host:port/database, no password) and the reason."""

from __future__ import annotations

import psycopg2
import pytest

from config import Config
from database.pool import (
    ConnectionPool,
    DatabaseUnavailableError,
    connection_failure_reason,
    describe_dsn,
    wait_for_database,
)
from tests.helpers import closed_port, config_for_database


@pytest.mark.parametrize(
    ("libpq_says", "reason"),
    [
        (
            'connection to server at "127.0.0.1", port 5999 failed: Connection refused\n'
            "\tIs the server running on that host and accepting TCP/IP connections?\n",
            "connection refused",
        ),
        ("timeout expired\n", "timeout"),
        (
            'connection to server at "db", port 5432 failed: FATAL:  database "payments" does not exist\n',
            'unknown database "payments"',
        ),
        (
            'connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "app"\n',
            'authentication failed for user "app"',
        ),
        ("fe_sendauth: no password supplied\n", "authentication failed: no password supplied"),
        (
            'could not translate host name "db.invalid" to address: Name or service not known\n',
            'unknown host "db.invalid"',
        ),
        (
            'connection to server at "db", port 5432 failed: FATAL:  the database system is starting up\n',
            "server starting up",
        ),
        ('connection to server at "db", port 5432 failed: FATAL:  something new\nDETAIL: more\n', "something new"),
    ],
)
def test_libpq_failures_become_a_short_reason(libpq_says: str, reason: str) -> None:
    assert connection_failure_reason(psycopg2.OperationalError(libpq_says)) == reason


@pytest.mark.parametrize(
    ("dsn", "described"),
    [
        ("postgresql://app:hunter2@db.internal:6432/payments", "db.internal:6432/payments"),
        ("host=db dbname=payments user=app password=hunter2", "db:5432/payments"),
        ("postgresql:///payments?host=/var/run/postgresql", "local socket:5432/payments"),
    ],
)
def test_a_dsn_is_described_without_user_or_password(dsn: str, described: str) -> None:
    assert describe_dsn(dsn) == described


def test_waiting_gives_up_naming_where_and_why() -> None:
    port = closed_port()

    with pytest.raises(DatabaseUnavailableError) as raised:
        wait_for_database(f"postgresql://app:hunter2@127.0.0.1:{port}/payments", 1, 0)

    assert raised.value.message == f"cannot connect to 127.0.0.1:{port}/payments: connection refused"


def test_an_unknown_database_is_named(base_config: Config) -> None:
    config = config_for_database(base_config, "payments_does_not_exist")

    with pytest.raises(DatabaseUnavailableError) as raised:
        wait_for_database(config.get_database_uri(), 2, 0, where="the payments database")

    assert raised.value.message == 'cannot connect to the payments database: unknown database "payments_does_not_exist"'


def test_the_pool_logs_where_and_why_but_tells_clients_only_that_it_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    pool = ConnectionPool(f"postgresql://app:hunter2@127.0.0.1:{port}/payments", 1, 1.0, 1)

    with pytest.raises(DatabaseUnavailableError) as raised, pool.cursor() as cur:
        cur.execute("SELECT 1")

    assert "127.0.0.1" not in raised.value.message
    (record,) = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
    assert (record.database, record.reason) == (f"127.0.0.1:{port}/payments", "connection refused")
    assert "hunter2" not in caplog.text
