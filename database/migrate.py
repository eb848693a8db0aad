"""Versioned SQL migrations: apply the files in database/migrations/ once each, in order, and record them.

A file normally runs inside a transaction: consecutive pending files share one, so a failure in any of
them applies none of them, and the ledger row of each is written in that same transaction.

A file whose first line is exactly `-- migrate: no-transaction` runs outside any transaction, for
statements PostgreSQL refuses inside one, chiefly `CREATE INDEX CONCURRENTLY`, which builds an index
on a live table without blocking its writes. Its statements are sent one at a time (several in one
call would form an implicit transaction block), each committing on its own, and the file is recorded
only after the last one succeeded. A failure therefore leaves the file unrecorded, possibly half done,
and the next run repeats every statement, so each must be safe to repeat:

- an index is built with `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON ...` (anything else
  is refused when the files are read). A failed or cancelled build leaves an INVALID index behind, which
  `IF NOT EXISTS` alone would keep; before each such statement the runner drops an invalid index of that
  name (`DROP INDEX CONCURRENTLY`), so a re-run always ends with a valid index;
- anything else is written to be repeated (`DROP INDEX CONCURRENTLY IF EXISTS`, ...).

A concurrent build waits for every transaction that might still not see the new index, in this whole
database, even idle ones on other tables. `lock_timeout` bounds each such wait: past it the statement
fails with a MigrationError naming the oldest open transactions, rather than the run hanging.

Every run holds a session-level advisory lock from start to end, across the non-transactional
statements too, so two runners at once (several containers starting) apply each file once. The lock is
taken by polling: a runner blocked inside `pg_advisory_lock` holds a snapshot, which the lock holder's
concurrent build would wait for, a deadlock PostgreSQL resolves by failing one of them.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from utils.logger import get_logger

logger = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
NO_TRANSACTION = "-- migrate: no-transaction"
_MARKER_RE = re.compile(r"^--\s*migrate\s*:", re.IGNORECASE)
_CREATE_INDEX_RE = re.compile(r"CREATE\s+(UNIQUE\s+)?INDEX\b", re.IGNORECASE)
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CONCURRENT_INDEX_RE = re.compile(
    rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(?P<name>{_IDENTIFIER}(?:\.{_IDENTIFIER})?)\s+ON\b",
    re.IGNORECASE,
)
_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
# Any constant works; it only has to be the same for every process that migrates this database.
_ADVISORY_LOCK_ID = 0x5061796D  # "Paym"
_LOCK_POLL_SECONDS = 0.5
# Files rewritten after release to build their index CONCURRENTLY outside a transaction. A database
# that applied the earlier text (inside a transaction) has the very same index, so that text's
# checksum is accepted too; any other edit is still refused.
EARLIER_CHECKSUMS = {
    "0004": "da8f3da905b225f9426aa9ba0508c577ea1811e2c4930ad3e9426d2f0cc50a1f",
    "0010": "7e1a1c5584001cee8785609119298a54c2a64fbcaaea1294b1286561def80547",
}

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   CHAR(64) NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
TRY_LOCK_MIGRATIONS = "SELECT pg_try_advisory_lock(%(lock_id)s)"
UNLOCK_MIGRATIONS = "SELECT pg_advisory_unlock(%(lock_id)s)"
SELECT_APPLIED = "SELECT version, checksum FROM schema_migrations"
RECORD_MIGRATION = """
INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)
"""
LEDGER_EXISTS = "SELECT to_regclass('public.schema_migrations') IS NOT NULL AS present"
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(timeout)s, false)"
RESET_LOCK_TIMEOUT = "RESET lock_timeout"
# The index a CREATE INDEX CONCURRENTLY IF NOT EXISTS names, when a failed build left it invalid.
SELECT_INVALID_INDEX = """
SELECT n.nspname, c.relname
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indexrelid = to_regclass(%(name)s) AND NOT i.indisvalid
"""
DROP_INDEX = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {index}")
# What a concurrent build may have been waiting for, oldest first, for the timeout's message.
SELECT_OLDEST_TRANSACTIONS = """
SELECT pid, state, application_name, floor(extract(epoch FROM now() - xact_start))::bigint AS open_seconds
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
ORDER BY xact_start
LIMIT 3
"""
# Drops only what migrations create, so --reset never touches unrelated tables.
DROP_ALL = """
DROP TABLE IF EXISTS notification_outbox, payment_stats, idempotency_keys, payment_receipts, payment_transactions,
                     payment_status_transitions, payment_refunds, payments, simulator_transactions, schema_migrations
                     CASCADE;
DROP FUNCTION IF EXISTS payment_stats_track, payment_stats_reset, payment_stats_add, payments_check_transition CASCADE
"""


class MigrationError(RuntimeError):
    """The migrations on disk and the ones recorded in the database disagree."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: version '0001', its name and contents."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL, to notice an applied file that was edited afterwards."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        """False when the file's first line is the no-transaction marker."""
        return self.sql.split("\n", 1)[0].strip() != NO_TRANSACTION

    def statements(self) -> list[str]:
        """The file's statements, one per entry, comments removed."""
        try:
            return split_statements(self.sql)
        except ValueError as exc:
            raise MigrationError(f"migration {self.name}: {exc}") from None


def split_statements(text: str) -> list[str]:
    """Split SQL at its top-level semicolons, skipping comments and respecting quotes and dollar quotes."""
    statements: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("--", i):
            i = _end_of(text, "\n", i + 2, "--") - 1  # the newline stays, as a separator
            current.append(" ")
        elif text.startswith("/*", i):
            i = _end_of_block_comment(text, i)
            current.append(" ")
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
            i += 1
        else:
            token_end = _end_of_quoted(text, i)
            current.append(text[i:token_end])
            i = token_end
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def _end_of(text: str, closing: str, start: int, opening: str) -> int:
    """Index just past `closing` found from `start` (a missing newline ends a line comment at the end)."""
    found = text.find(closing, start)
    if found < 0:
        if closing == "\n":
            return len(text) + 1
        raise ValueError(f"unterminated {opening}")
    return found + len(closing)


def _end_of_block_comment(text: str, start: int) -> int:
    """Index just past the /* comment at `start` (PostgreSQL's block comments nest)."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise ValueError("unterminated /* comment")


def _end_of_quoted(text: str, start: int) -> int:
    """Index just past the string, quoted identifier or dollar-quoted body at `start`; else start + 1."""
    char = text[start]
    after_word = start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_$")
    if char in "'\"":
        escapes = char == "'" and after_word and text[start - 1] in "Ee"  # E'...' takes backslash escapes
        i = start + 1
        while i < len(text):
            if escapes and text[i] == "\\":
                i += 2
            elif text[i] == char:
                if not text.startswith(char, i + 1):
                    return i + 1
                i += 2  # a doubled quote stands for itself
            else:
                i += 1
        raise ValueError(f"unterminated {char}")
    if char == "$" and not after_word:  # not $1 or a name containing $
        tag = _DOLLAR_TAG_RE.match(text, start)
        if tag:
            return _end_of(text, tag.group(), tag.end(), tag.group())
    return start + 1


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations on disk, ordered by version; refuse a no-transaction file a re-run could not repair."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        migration = Migration(match.group(1), path.stem, path.read_text())
        _check_marker(migration)
        found.append(migration)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def _check_marker(migration: Migration) -> None:
    """Refuse a misspelt marker, and index builds in a no-transaction file that a re-run could not finish."""
    first_line = migration.sql.split("\n", 1)[0].strip()
    if _MARKER_RE.match(first_line) and first_line != NO_TRANSACTION:
        raise MigrationError(f"migration {migration.name}: the only marker is {NO_TRANSACTION!r}, got {first_line!r}")
    if migration.transactional:
        return
    statements = migration.statements()
    if not statements:
        raise MigrationError(f"migration {migration.name} has no statements")
    for statement in statements:
        if _CREATE_INDEX_RE.match(statement) and not _CONCURRENT_INDEX_RE.match(statement):
            raise MigrationError(
                f"migration {migration.name}: outside a transaction, build indexes with "
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ON ..., so a re-run can finish a failed build"
            )


def apply_migrations(
    conn: psycopg2.extensions.connection, directory: Path = MIGRATIONS_DIR, lock_timeout: float = 0
) -> list[str]:
    """Apply every pending migration; return the versions applied now.

    `lock_timeout` (seconds, 0 for none) bounds each lock wait of the statements run outside a transaction.
    """
    migrations = discover(directory)
    autocommit = conn.autocommit
    if not autocommit:
        conn.commit()  # what the caller left open: autocommit cannot change inside a transaction
    conn.autocommit = True  # the lock and the no-transaction statements are taken outside any transaction
    try:
        _lock(conn)
        try:
            return _apply_pending(conn, migrations, lock_timeout)
        finally:
            if not conn.closed:
                with conn.cursor() as cur:
                    cur.execute(UNLOCK_MIGRATIONS, {"lock_id": _ADVISORY_LOCK_ID})
    finally:
        if not conn.closed:
            conn.autocommit = autocommit


def _lock(conn: psycopg2.extensions.connection) -> None:
    """Take the session-level migration lock, polling so that no snapshot is held while waiting."""
    with conn.cursor() as cur:
        for attempt in itertools.count():
            cur.execute(TRY_LOCK_MIGRATIONS, {"lock_id": _ADVISORY_LOCK_ID})
            if cur.fetchone()[0]:
                return
            if attempt == 0:
                logger.info("another migration run holds the lock; waiting for it to finish")
            time.sleep(_LOCK_POLL_SECONDS)


def _apply_pending(conn: psycopg2.extensions.connection, migrations: list[Migration], lock_timeout: float) -> list[str]:
    """Run the migrations the ledger lacks: transactional runs of files together, the others alone."""
    with conn.cursor() as cur:
        cur.execute(CREATE_LEDGER)
        cur.execute(SELECT_APPLIED)
        applied = dict(cur.fetchall())
    pending = []
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded not in (migration.checksum, EARLIER_CHECKSUMS.get(migration.version)):
            raise MigrationError(
                f"migration {migration.name} was changed after it was applied; add a new migration instead"
            )
    done_now: list[str] = []
    batch: list[Migration] = []
    for migration in pending:
        if migration.transactional:
            batch.append(migration)
            continue
        done_now += _apply_in_transaction(conn, batch)
        batch = []
        _apply_outside_transaction(conn, migration, lock_timeout)
        done_now.append(migration.version)
    return done_now + _apply_in_transaction(conn, batch)


def _record(cur: psycopg2.extensions.cursor, migration: Migration) -> None:
    """Write the migration's ledger row."""
    cur.execute(
        RECORD_MIGRATION, {"version": migration.version, "name": migration.name, "checksum": migration.checksum}
    )


def _apply_in_transaction(conn: psycopg2.extensions.connection, batch: list[Migration]) -> list[str]:
    """Run `batch` and record it in one transaction: all of it or none."""
    if not batch:
        return []
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for migration in batch:
                logger.info("applying migration", extra={"migration": migration.name})
                cur.execute(migration.sql)
                _record(cur, migration)
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    finally:
        if not conn.closed:
            conn.autocommit = True
    return [migration.version for migration in batch]


def _apply_outside_transaction(conn: psycopg2.extensions.connection, migration: Migration, lock_timeout: float) -> None:
    """Run a no-transaction file statement by statement, then record it; a failure records nothing."""
    logger.info("applying migration outside a transaction", extra={"migration": migration.name})
    statements = migration.statements()
    with conn.cursor() as cur:
        if lock_timeout > 0:
            cur.execute(SET_LOCK_TIMEOUT, {"timeout": f"{max(1, round(lock_timeout * 1000))}ms"})
        try:
            for number, statement in enumerate(statements, 1):
                try:
                    _drop_invalid_index(cur, migration, statement)
                    cur.execute(statement)
                except psycopg2.errors.LockNotAvailable as exc:
                    raise MigrationError(
                        _timeout_message(cur, migration, number, len(statements), lock_timeout)
                    ) from exc
                except BaseException:
                    logger.warning(
                        "migration stopped part way; it is not recorded, and the next run repeats its statements",
                        extra={"migration": migration.name, "statement": number, "statements": len(statements)},
                    )
                    raise
        finally:
            if lock_timeout > 0 and not conn.closed:
                cur.execute(RESET_LOCK_TIMEOUT)
        _record(cur, migration)


def _drop_invalid_index(cur: psycopg2.extensions.cursor, migration: Migration, statement: str) -> None:
    """Before a concurrent build, drop the invalid index an earlier failed build of it left."""
    match = _CONCURRENT_INDEX_RE.match(statement)
    if not match:
        return
    cur.execute(SELECT_INVALID_INDEX, {"name": match.group("name")})
    row = cur.fetchone()
    if row is None:
        return
    logger.warning(
        "dropping the invalid index an interrupted build left, to build it again",
        extra={"migration": migration.name, "index": f"{row[0]}.{row[1]}"},
    )
    cur.execute(DROP_INDEX.format(index=sql.Identifier(*row)))


def _timeout_message(
    cur: psycopg2.extensions.cursor, migration: Migration, number: int, total: int, lock_timeout: float
) -> str:
    """Say what timed out, which transactions were oldest, and that a re-run repairs it."""
    cur.execute(SELECT_OLDEST_TRANSACTIONS)
    oldest = "; ".join(
        f"pid {pid} ({state}, {application_name or 'no application name'}, open {seconds} s)"
        for pid, state, application_name, seconds in cur.fetchall()
    )
    return (
        f"migration {migration.name}, statement {number} of {total}: waited more than {lock_timeout:g} s for a lock "
        f"or for older transactions to end (oldest open: {oldest or 'none now'}). Nothing is recorded; run the "
        f"migrations again once those end (an index left invalid is dropped and built again)"
    )


def pending_migrations(conn: psycopg2.extensions.connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Return versions on disk that the database has not applied (all of them on an empty database)."""
    on_disk = [m.version for m in discover(directory)]
    with conn.cursor() as cur:
        cur.execute(LEDGER_EXISTS)
        if not cur.fetchone()[0]:
            return on_disk
        cur.execute(SELECT_APPLIED)
        applied = {row[0] for row in cur.fetchall()}
    return [v for v in on_disk if v not in applied]


def drop_everything(conn: psycopg2.extensions.connection) -> None:
    """Drop the service's tables (only for an explicit --reset)."""
    with conn.cursor() as cur:
        cur.execute(DROP_ALL)
    conn.commit()
