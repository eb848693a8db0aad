"""Operator commands.

Usage:
  python manage.py purge-idempotency-keys          delete idempotency keys past IDEMPOTENCY_KEY_TTL
  python manage.py dispatch-notifications [--once] deliver outbox notifications (until stopped)
  python manage.py dead-notifications [--limit N]  list notifications that ran out of attempts
  python manage.py requeue-notifications (--all | ID...)  make dead notifications due again
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator

from config import Config, ConfigError
from database.pool import DatabaseUnavailableError
from services.container import Services, build_services, close_services
from utils.logger import configure_logging


@contextlib.contextmanager
def _services(config: Config) -> Iterator[Services]:
    """The service graph for one command (a small pool; no background thread started)."""
    graph = build_services(config.with_overrides({"DB_POOL_SIZE": 2}))
    try:
        yield graph
    finally:
        close_services(graph)


def purge_idempotency_keys(config: Config) -> int:
    """Delete expired keys; return how many were deleted."""
    with _services(config) as graph:
        return graph.idempotency.purge_expired()


def dispatch_notifications(config: Config, once: bool) -> int:
    """Run a dispatcher in the foreground (SIGTERM or Ctrl-C stops it after the current send)."""
    with _services(config) as graph:
        dispatcher = graph.dispatcher
        if once:
            attempted = 0
            while (batch := dispatcher.run_once()) > 0:
                attempted += batch
            print(f"attempted {attempted} notifications")
            return 0
        signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop(timeout=0))
        print("dispatching notifications; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            dispatcher.run_forever()
        return 0


def dead_notifications(config: Config, limit: int) -> int:
    """Print dead notifications, one per line."""
    with _services(config) as graph:
        rows = graph.notifications.dead(limit)
    for row in rows:
        print(f"{row['notification_id']}\t{row['event_type']}\tattempts={row['attempts']}\t"
              f"died={row['updated_at']:%Y-%m-%d %H:%M:%S}\t{row['last_error']}")  # fmt: skip
    print(f"{len(rows)} dead notifications")
    return 0


def requeue_notifications(config: Config, ids: list[str], everything: bool) -> int:
    """Make dead notifications due again."""
    with _services(config) as graph:
        requeued = graph.notifications.requeue(None if everything else ids)
    print(f"re-queued {len(requeued)} notifications")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 1 on a database problem, 2 on bad configuration."""
    parser = argparse.ArgumentParser(description="Payment service operator commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("purge-idempotency-keys", help="delete expired idempotency keys (run e.g. hourly from cron)")
    dispatch = commands.add_parser("dispatch-notifications", help="deliver outbox notifications")
    dispatch.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    dead = commands.add_parser("dead-notifications", help="list notifications that ran out of attempts")
    dead.add_argument("--limit", type=int, default=100)
    requeue = commands.add_parser("requeue-notifications", help="make dead notifications due again")
    requeue.add_argument("ids", nargs="*", metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every dead notification")
    args = parser.parse_args(argv)
    if args.command == "requeue-notifications" and bool(args.ids) == bool(args.all):
        parser.error("requeue-notifications takes either --all or one or more IDs")

    configure_logging("WARNING", json_lines=False)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "purge-idempotency-keys":
            print(f"purged {purge_idempotency_keys(config)} expired idempotency keys")
        elif args.command == "dispatch-notifications":
            return dispatch_notifications(config, args.once)
        elif args.command == "dead-notifications":
            return dead_notifications(config, args.limit)
        elif args.command == "requeue-notifications":
            return requeue_notifications(config, args.ids, args.all)
    except DatabaseUnavailableError as exc:
        print(f"database unavailable: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
