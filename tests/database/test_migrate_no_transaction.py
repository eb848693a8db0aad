"""Migrations run outside a transaction: index builds that leave writes running, and re-runs that repair."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from config import Config
from database.migrate import (
    EARLIER_CHECKSUMS,
    Migration,
    MigrationError,
    apply_migrations,
    discover,
    split_statements,
)
from tests.helpers import all_at_once, config_for_database, create_database, drop_database, wait_until

MIGRATIONS = {migration.version: migration for migration in discover()}
INDEX_0004 = "payments_status_method_created_idx"
# Generated rows, loaded before 0002 installs the per-row stats trigger (which 0002 then counts them for).
INSERT_PAYMENTS = """
INSERT INTO payments (trip_id, rider_id, amount, method, status, reference, created_at)
SELECT g, g %% 5000 + 1, 10 + g %% 90, (ARRAY['CARD', 'WALLET', 'UPI', 'CASH'])[g %% 4 + 1],
       (ARRAY['SUCCESS', 'FAILED', 'REFUNDED', 'PENDING'])[g %% 3 + 1], 'gen-' || g, now() - g * interval '1 second'
FROM generate_series(1, %(rows)s) AS g
"""
INDEX_VALID = """
SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass(%(name)s)
"""
BUILD_WAITING = """
SELECT pid FROM pg_stat_activity
WHERE application_name = %(app)s AND query ILIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'
"""
# The text of 0004 and 0010 before they built their index CONCURRENTLY, as databases applied it.
EARLIER_0004 = """-- 0004: GET /v1/payments?status=...&method=... filtered on both columns read one index with
-- neither filter left to check row by row; a rare combination (say FAILED with UPI) otherwise
-- scanned every row of the status to find a page. Built without CONCURRENTLY because migrations
-- run in a transaction; on a large table, create it CONCURRENTLY by hand first (same name).
CREATE INDEX IF NOT EXISTS payments_status_method_created_idx
    ON payments (status, method, created_at DESC, payment_id DESC);
"""
EARLIER_0010 = """-- 0010: delivered notifications are purged after NOTIFY_RETENTION (services.housekeeping); this
-- index lets each purge batch find the oldest delivered rows without reading the whole outbox.
CREATE INDEX notification_outbox_delivered_idx ON notification_outbox (updated_at) WHERE status = 'DELIVERED';
"""


@pytest.fixture
def scratch_dsn(base_config: Config) -> Iterator[str]:
    """The address of a brand-new empty database, dropped afterwards."""
    name = create_database(base_config, "payments_migrate")
    yield config_for_database(base_config, name).get_database_uri()
    drop_database(base_config, name)


@pytest.fixture
def connect(scratch_dsn: str) -> Iterator:
    """Open connections to the scratch database under an application name; all closed afterwards."""
    opened: list[psycopg2.extensions.connection] = []

    def open_connection(application_name: str = "test") -> psycopg2.extensions.connection:
        conn = psycopg2.connect(scratch_dsn, application_name=application_name)
        opened.append(conn)
        return conn

    yield open_connection
    for conn in opened:
        conn.close()


def write(folder: Path, *versions: str) -> None:
    """Copy the project's migrations of these versions into `folder`."""
    for version in versions:
        (folder / f"{MIGRATIONS[version].name}.sql").write_text(MIGRATIONS[version].sql)


def with_payments(conn: psycopg2.extensions.connection, folder: Path, rows: int) -> None:
    """Migrate to 0001, load `rows` payments, then add 0002 and 0003 to `folder` (not applied yet)."""
    write(folder, "0001")
    apply_migrations(conn, folder)
    with conn.cursor() as cur:
        cur.execute(INSERT_PAYMENTS, {"rows": rows})
    conn.commit()
    write(folder, "0002", "0003")


def index_valid(conn: psycopg2.extensions.connection, name: str) -> bool | None:
    """True or False as pg_index says; None when the index does not exist."""
    with conn.cursor() as cur:
        cur.execute(INDEX_VALID, {"name": name})
        row = cur.fetchone()
    conn.commit()
    return None if row is None else row[0]


def recorded(conn: psycopg2.extensions.connection) -> list[str]:
    """The versions in the ledger."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row[0] for row in cur.fetchall()]
    conn.commit()
    return versions


def waiting_build(watcher: psycopg2.extensions.connection, application_name: str) -> int | None:
    """The backend of `application_name` while its CREATE INDEX CONCURRENTLY waits for a lock."""
    with watcher.cursor() as cur:
        cur.execute(BUILD_WAITING, {"app": application_name})
        row = cur.fetchone()
    watcher.commit()
    return None if row is None else row[0]


def open_snapshot(conn: psycopg2.extensions.connection) -> None:
    """Leave `conn` idle in a transaction holding a snapshot, as a long report would (on another table)."""
    conn.set_session(isolation_level="REPEATABLE READ")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM payment_receipts")


class Writer(threading.Thread):
    """Keeps inserting and updating payments, one commit at a time, noting when each pair finished."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.finished_at: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        self.conn.autocommit = True
        try:
            with self.conn.cursor() as cur:
                number = 0
                while not self.stop.is_set():
                    number += 1
                    cur.execute(
                        "INSERT INTO payments (trip_id, amount, method, status, reference)"
                        " VALUES (%(trip)s, 12.50, 'UPI', 'SUCCESS', %(reference)s)",
                        {"trip": 10_000_000 + number, "reference": f"writer-{number}"},
                    )
                    cur.execute("UPDATE payments SET updated_at = now() WHERE payment_id = %(id)s", {"id": number})
                    self.finished_at.append(time.monotonic())
        except BaseException as exc:
            self.error = exc


def test_statements_split_at_semicolons_outside_quotes_and_comments() -> None:
    text = """
        -- a comment; with a semicolon
        CREATE INDEX CONCURRENTLY IF NOT EXISTS "odd;name" ON t (a); /* block; /* nested; */ still */
        SELECT 'it''s; fine', E'back\\'slash;', $$dollar; body$$, $fn$ a $$ b; $fn$;
        DROP INDEX CONCURRENTLY IF EXISTS x
    """

    assert split_statements(text) == [
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "odd;name" ON t (a)',
        "SELECT 'it''s; fine', E'back\\'slash;', $$dollar; body$$, $fn$ a $$ b; $fn$",
        "DROP INDEX CONCURRENTLY IF EXISTS x",
    ]


def test_an_unterminated_quote_in_a_no_transaction_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_broken.sql").write_text("-- migrate: no-transaction\nSELECT 'open;\n")

    with pytest.raises(MigrationError, match="0001_broken: unterminated '"):
        discover(tmp_path)


def test_only_the_first_line_marks_a_file_and_a_misspelt_marker_is_refused(tmp_path: Path) -> None:
    assert not Migration("0001", "0001_a", "-- migrate: no-transaction\nSELECT 1;").transactional
    assert Migration("0001", "0001_a", "-- 0001: notes\n-- migrate: no-transaction\nSELECT 1;").transactional
    (tmp_path / "0001_typo.sql").write_text("-- migrate: no-transactions\nSELECT 1;\n")

    with pytest.raises(MigrationError, match="the only marker is '-- migrate: no-transaction'"):
        discover(tmp_path)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX t_a_idx ON t (a)",
        "CREATE INDEX CONCURRENTLY t_a_idx ON t (a)",
        "CREATE UNIQUE INDEX IF NOT EXISTS t_a_idx ON t (a)",
        "CREATE INDEX CONCURRENTLY ON t (a)",
    ],
)
def test_a_no_transaction_index_build_a_rerun_could_not_finish_is_refused(tmp_path: Path, statement: str) -> None:
    (tmp_path / "0001_index.sql").write_text(f"-- migrate: no-transaction\n{statement};\n")

    with pytest.raises(MigrationError, match="CREATE INDEX CONCURRENTLY IF NOT EXISTS <name>"):
        discover(tmp_path)


def test_0004_and_0010_build_concurrently_outside_a_transaction() -> None:
    for version in ("0004", "0010"):
        assert not MIGRATIONS[version].transactional
        assert [s.split()[:6] for s in MIGRATIONS[version].statements()] == [
            ["CREATE", "INDEX", "CONCURRENTLY", "IF", "NOT", "EXISTS"]
        ]


def test_a_database_that_applied_the_earlier_0004_and_0010_is_accepted_with_the_same_indexes(
    connect, tmp_path: Path, db: psycopg2.extensions.connection
) -> None:
    assert {version: Migration(version, "x", text).checksum for version, text in
            [("0004", EARLIER_0004), ("0010", EARLIER_0010)]} == EARLIER_CHECKSUMS  # fmt: skip
    conn = connect()
    for migration in MIGRATIONS.values():
        earlier = {"0004": EARLIER_0004, "0010": EARLIER_0010}.get(migration.version, migration.sql)
        (tmp_path / f"{migration.name}.sql").write_text(earlier)
    apply_migrations(conn, tmp_path)

    assert apply_migrations(conn) == []

    definitions = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    with conn.cursor() as cur, db.cursor() as fresh:
        cur.execute(definitions)
        fresh.execute(definitions)  # the test database, migrated from today's files
        assert cur.fetchall() == fresh.fetchall()


def test_an_earlier_checksum_is_accepted_only_for_its_own_file(connect, tmp_path: Path) -> None:
    conn = connect()
    write(tmp_path, "0001", "0002", "0003")
    (tmp_path / "0005_other.sql").write_text(EARLIER_0004)
    apply_migrations(conn, tmp_path)
    (tmp_path / "0005_other.sql").write_text(MIGRATIONS["0004"].sql)

    with pytest.raises(MigrationError, match="0005_other was changed after it was applied"):
        apply_migrations(conn, tmp_path)


def test_the_index_builds_while_payments_keep_being_written(connect, tmp_path: Path) -> None:
    conn = connect()
    with_payments(conn, tmp_path, rows=200_000)
    apply_migrations(conn, tmp_path)
    write(tmp_path, "0004")
    writer = Writer(connect("writer"))
    writer.start()
    assert wait_until(lambda: len(writer.finished_at) >= 20, timeout=10)

    started = time.monotonic()
    applied = apply_migrations(conn, tmp_path)
    finished = time.monotonic()
    writer.stop.set()
    writer.join(timeout=10)

    assert writer.error is None
    assert applied == ["0004"]
    assert index_valid(conn, INDEX_0004) is True
    during = [at for at in writer.finished_at if started < at < finished]
    marks = [started, *during, finished]
    longest_pause = max(later - earlier for earlier, later in itertools.pairwise(marks))
    # Inside a transaction the build holds a SHARE lock: the writer stops for the whole build.
    assert len(during) >= 10, f"{len(during)} writes in {finished - started:.2f} s"
    assert longest_pause < (finished - started) / 2, f"writes paused {longest_pause:.2f} of {finished - started:.2f} s"


def test_a_build_cancelled_part_way_is_built_again_valid_by_the_next_run(connect, tmp_path: Path) -> None:
    conn, watcher, report = connect("migrator"), connect("watcher"), connect("report")
    with_payments(conn, tmp_path, rows=1_000)
    apply_migrations(conn, tmp_path)
    write(tmp_path, "0004")
    open_snapshot(report)  # the build waits for it at its end, the index still invalid

    with ThreadPoolExecutor(max_workers=1) as pool:
        run = pool.submit(apply_migrations, conn, tmp_path)
        assert wait_until(lambda: waiting_build(watcher, "migrator") is not None, timeout=30)
        with watcher.cursor() as cur:
            cur.execute("SELECT pg_cancel_backend(%(pid)s)", {"pid": waiting_build(watcher, "migrator")})
        watcher.commit()
        with pytest.raises(psycopg2.errors.QueryCanceled):
            run.result(timeout=30)

    assert index_valid(watcher, INDEX_0004) is False
    assert "0004" not in recorded(watcher)
    report.rollback()

    assert apply_migrations(conn, tmp_path) == ["0004"]
    assert index_valid(watcher, INDEX_0004) is True
    assert apply_migrations(conn, tmp_path) == []


def test_a_long_transaction_makes_the_build_fail_clearly_after_the_lock_timeout(connect, tmp_path: Path) -> None:
    conn, report = connect("migrator"), connect("nightly-report")
    with_payments(conn, tmp_path, rows=1_000)
    apply_migrations(conn, tmp_path)
    write(tmp_path, "0004")
    open_snapshot(report)

    with pytest.raises(MigrationError) as failure:
        apply_migrations(conn, tmp_path, lock_timeout=0.5)

    assert "0004_list_status_method_index, statement 1 of 1: waited more than 0.5 s" in str(failure.value)
    assert "nightly-report" in str(failure.value)
    report.rollback()
    assert apply_migrations(conn, tmp_path, lock_timeout=0.5) == ["0004"]
    assert index_valid(conn, INDEX_0004) is True
    with conn.cursor() as cur:
        cur.execute("SHOW lock_timeout")
        assert cur.fetchone()[0] == "0"  # the session's own setting is back


def test_two_runs_at_once_apply_each_file_once_around_a_concurrent_build(connect, tmp_path: Path) -> None:
    first, second = connect("migrator-1"), connect("migrator-2")
    with_payments(first, tmp_path, rows=20_000)
    write(tmp_path, "0004")

    results = all_at_once([lambda: apply_migrations(first, tmp_path), lambda: apply_migrations(second, tmp_path)])

    assert sorted(results) == [[], ["0002", "0003", "0004"]]
    assert recorded(first) == ["0001", "0002", "0003", "0004"]
    assert index_valid(first, INDEX_0004) is True


def test_files_before_a_failing_no_transaction_file_stay_applied(connect, tmp_path: Path) -> None:
    conn = connect()
    (tmp_path / "0001_table.sql").write_text("CREATE TABLE t (a int);")
    (tmp_path / "0002_index.sql").write_text(
        "-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_b_idx ON t (b);\n"
    )

    with pytest.raises(psycopg2.errors.UndefinedColumn):
        apply_migrations(conn, tmp_path)

    assert recorded(conn) == ["0001"]
    (tmp_path / "0003_later.sql").write_text("CREATE TABLE later (a int);")
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        apply_migrations(conn, tmp_path)
    assert recorded(conn) == ["0001"]  # nothing after the failing file runs
