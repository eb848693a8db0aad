"""Versioned SQL migrations: apply the files in database/migrations/ once each, in order, and record them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions

from utils.logger import get_logger

logger = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every process that migrates this database.
_ADVISORY_LOCK_ID = 0x5061796D  # "Paym"

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   CHAR(64) NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%(lock_id)s)"
SELECT_APPLIED = "SELECT version, checksum FROM schema_migrations"
RECORD_MIGRATION = """
INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)
"""
LEDGER_EXISTS = "SELECT to_regclass('public.schema_migrations') IS NOT NULL AS present"
# Drops only what migrations create, so --reset never touches unrelated tables.
DROP_ALL = """
DROP TABLE IF EXISTS notification_outbox, payment_stats, idempotency_keys, payment_receipts, payment_refunds, payments,
                     simulator_transactions, schema_migrations CASCADE;
DROP FUNCTION IF EXISTS payment_stats_track, payment_stats_reset, payment_stats_add CASCADE
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


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Return the migrations on disk, ordered by version."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path.name}")
        found.append(Migration(match.group(1), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def apply_migrations(conn: psycopg2.extensions.connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in one transaction; return the versions applied now."""
    migrations = discover(directory)
    try:
        done_now = _apply_pending(conn, migrations)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return done_now


def _apply_pending(conn: psycopg2.extensions.connection, migrations: list[Migration]) -> list[str]:
    """Run the migrations the ledger lacks, inside the caller's transaction."""
    with conn.cursor() as cur:
        # Serialises concurrent starters (several containers at once); released at commit.
        cur.execute(LOCK_MIGRATIONS, {"lock_id": _ADVISORY_LOCK_ID})
        cur.execute(CREATE_LEDGER)
        cur.execute(SELECT_APPLIED)
        applied = dict(cur.fetchall())
        done_now = []
        for migration in migrations:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was changed after it was applied; add a new migration instead"
                    )
                continue
            logger.info("applying migration", extra={"migration": migration.name})
            cur.execute(migration.sql)
            cur.execute(
                RECORD_MIGRATION,
                {"version": migration.version, "name": migration.name, "checksum": migration.checksum},
            )
            done_now.append(migration.version)
    return done_now


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
