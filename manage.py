"""Operator commands.

Usage:
  python manage.py purge-idempotency-keys   delete idempotency keys past IDEMPOTENCY_KEY_TTL
"""

from __future__ import annotations

import argparse
import sys

from config import Config, ConfigError
from database.connection import ConnectionPool, DatabaseUnavailableError
from services.idempotency_service import IdempotencyService
from utils.logger import configure_logging


def purge_idempotency_keys(config: Config) -> int:
    """Delete expired keys; return how many were deleted."""
    pool = ConnectionPool(config.get_database_uri(), size=1, wait_timeout=5, connect_timeout=config.DB_CONNECT_TIMEOUT)
    try:
        service = IdempotencyService(pool, config.IDEMPOTENCY_KEY_TTL, config.IDEMPOTENCY_LOCK_TIMEOUT)
        return service.purge_expired()
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 1 on a database problem, 2 on bad configuration."""
    parser = argparse.ArgumentParser(description="Payment service operator commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("purge-idempotency-keys", help="delete expired idempotency keys (run e.g. hourly from cron)")
    args = parser.parse_args(argv)

    configure_logging("WARNING", json_lines=False)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "purge-idempotency-keys":
            print(f"purged {purge_idempotency_keys(config)} expired idempotency keys")
    except DatabaseUnavailableError as exc:
        print(f"database unavailable: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
