"""Prepare the database: create it if missing, apply migrations, load the seed CSV. Safe to re-run.

Usage: python database_setup.py [--csv PATH | --no-seed] [--reset] [--wait SECONDS]

Exit status: 0 done; 1 the database failed (the message names host:port/database and why, e.g.
"database set-up failed: cannot connect to 127.0.0.1:5999/payments: connection refused", never the
password), or the seed file is bad; 2 bad arguments or settings.

Nothing is ever dropped unless --reset is given. The CSV defaults to rhfd_payments.csv beside this
file, or SEED_CSV from the environment; rows whose payment_id already exists are left untouched,
except a PARTIALLY_REFUNDED row an earlier version stored without its refunded amount, which the
file's amount_refunded repairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg2
from psycopg2 import sql

from config import Config, ConfigError, load_environment
from database.migrate import MigrationError, apply_migrations, drop_everything
from database.pool import DatabaseUnavailableError, connection_failure_reason, wait_for_database
from database.seed import SeedError, load_csv
from utils.logger import configure_logging

DEFAULT_CSV = Path(__file__).resolve().parent / "rhfd_payments.csv"
# The shipped file is priced with the reference design's rupee fares (scripts/generate_seed_csv.py), so
# its rows are INR payments whatever CURRENCY is; another file's amounts are taken to be in CURRENCY.
DEFAULT_CSV_CURRENCY = "INR"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %(name)s"


def connect(config: Config, **options: str) -> psycopg2.extensions.connection:
    """Connect to the database `config` names; a failure says where and why (never the password)."""
    try:
        return psycopg2.connect(config.get_database_uri(), connect_timeout=config.DB_CONNECT_TIMEOUT, **options)
    except psycopg2.OperationalError as exc:
        reason = connection_failure_reason(exc)
        if reason == "timeout":
            reason = f"timeout after {config.DB_CONNECT_TIMEOUT}s"
        raise DatabaseUnavailableError(f"cannot connect to {config.describe_database()}: {reason}") from exc


def ensure_database(config: Config) -> None:
    """Create DB_NAME on the server when it does not exist yet (skipped when DATABASE_URL is used)."""
    if config.DATABASE_URL:
        return
    conn = connect(config.with_overrides({"DB_NAME": "postgres"}))
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(DATABASE_EXISTS, {"name": config.DB_NAME})
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config.DB_NAME)))
                print(f"created database {config.DB_NAME}")
    finally:
        conn.close()


def count_payments(conn: psycopg2.extensions.connection) -> int:
    """Return how many payments are stored."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        return cur.fetchone()[0]


def seed_currency(config: Config, csv_path: Path) -> str:
    """The currency a seed file's amounts are in: INR for the shipped file, else CURRENCY."""
    return DEFAULT_CSV_CURRENCY if csv_path.resolve() == DEFAULT_CSV else config.CURRENCY


def setup(config: Config, csv_path: Path | None, reset: bool = False, wait_seconds: float = 0.0) -> int:
    """Run the whole set-up; return the number of payments stored afterwards."""
    # Without DATABASE_URL the server is reached through its maintenance database (ours may not exist
    # yet); errors still name the configured database, e.g. "cannot connect to host:port/payments: ...".
    server = config if config.DATABASE_URL else config.with_overrides({"DB_NAME": "postgres"})
    wait_for_database(
        server.get_database_uri(), config.DB_CONNECT_TIMEOUT, wait_seconds, where=config.describe_database()
    )
    ensure_database(config)
    # Behind a pooler that refuses startup options (DB_SESSION_OPTIONS=false) its connect_query sets UTC.
    conn = connect(config, options="-c timezone=UTC") if config.DB_SESSION_OPTIONS else connect(config)
    try:
        if reset:
            drop_everything(conn)
            print("reset: dropped all payment-service tables")
        applied = apply_migrations(conn, lock_timeout=config.DB_MIGRATION_LOCK_TIMEOUT)
        print(f"migrations applied now: {', '.join(applied) if applied else 'none (schema up to date)'}")
        if csv_path is not None:
            result = load_csv(conn, csv_path, seed_currency(config, csv_path))
            print(
                f"seed {csv_path.name}: {result.rows_in_file} rows in file, {result.inserted} inserted, "
                f"{result.repaired} repaired"
            )
        total = count_payments(conn)
        conn.commit()
    finally:
        conn.close()
    print(f"payments stored: {total}")
    return total


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the set-up and turn known failures into a message and exit code 1."""
    parser = argparse.ArgumentParser(description="Apply migrations and load seed payments (safe to re-run).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--csv", type=Path, help="CSV file to load (default: $SEED_CSV or rhfd_payments.csv)")
    source.add_argument("--no-seed", action="store_true", help="apply migrations only")
    parser.add_argument("--reset", action="store_true", help="DROP the service's tables first (destroys data)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep retrying the database connection this long (e.g. in a container)",
    )
    args = parser.parse_args(argv)

    configure_logging("WARNING", json_lines=False, stream=sys.stderr)  # stdout is the set-up's report
    env = load_environment()
    try:
        # Setting up the database moves no money and serves nobody: production's refusals (API keys,
        # signing secret...) are the service's to make when it starts, not the migration Job's.
        config = Config.from_env(env, refuse_unsafe=False)
    except ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 2
    csv_path = None if args.no_seed else (args.csv or Path(env.get("SEED_CSV") or DEFAULT_CSV))
    try:
        setup(config, csv_path, reset=args.reset, wait_seconds=args.wait)
    except SeedError as exc:
        print(f"seed error, nothing loaded: {exc}", file=sys.stderr)
        return 1
    except (MigrationError, DatabaseUnavailableError) as exc:
        print(f"database set-up failed: {exc}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        print(f"database set-up failed on {config.describe_database()}: {first_line.strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
