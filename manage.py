"""Operator commands.

Usage:
  python manage.py purge                           delete expired idempotency keys and old delivered notifications
  python manage.py purge-idempotency-keys          delete idempotency keys past IDEMPOTENCY_KEY_TTL
  python manage.py dispatch-notifications [--once] deliver outbox notifications (until stopped)
  python manage.py dead-notifications [--limit N]  list notifications that ran out of attempts
  python manage.py requeue-notifications (--all | ID...)  make dead notifications due again
  python manage.py reconcile [--once] [--dry-run]  settle PENDING payments and refunds against the gateway
  python manage.py check [--deploy]                check the settings (--deploy: as for production); no database

Exit status: 0 done; 1 the database failed (the message names host:port/database and why, never
the password), an ID was not a dead notification, or `check` found a problem; 2 bad arguments (usage
on stderr) or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import psycopg2

from config import Config, ConfigError
from database.pool import DatabaseUnavailableError, connection_failure_reason, wait_for_database
from services.container import Services, build_services, close_services
from utils.logger import configure_logging

MAX_LIMIT = 10_000
MAX_IDS = 1_000
# What the services write as notification_id: payment-<id>-<status>, refund-<id>[-<status>], receipt-<id>.
NOTIFICATION_ID = re.compile(r"payment-[1-9][0-9]*-[a-z_]+|refund-[1-9][0-9]*(-[a-z_]+)?|receipt-[1-9][0-9]*")


def _limit(text: str) -> int:
    """Parse --limit: an integer from 1 to MAX_LIMIT."""
    # int() would also take a fullwidth digit or " 5 "; the service reads numbers as plain ASCII digits only.
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT}, got {value}")
    return value


def _notification_id(text: str) -> str:
    """Check a requeue ID has the shape of a notification id."""
    if not NOTIFICATION_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a notification id (e.g. payment-12-success, refund-3, receipt-4)"
        )
    return text


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
        return _until_done(graph.housekeeper.purge_expired_keys)


def purge(config: Config) -> tuple[int, int]:
    """Delete expired keys and notifications delivered before NOTIFY_RETENTION; return both counts."""
    with _services(config) as graph:
        return (
            _until_done(graph.housekeeper.purge_expired_keys),
            _until_done(graph.housekeeper.purge_delivered_notifications),
        )


def _until_done(purge_pass: Callable[[], int]) -> int:
    """Repeat a bounded purge pass until one deletes nothing; return the total."""
    total = 0
    while deleted := purge_pass():
        total += deleted
    return total


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
    """Make dead notifications due again; exit 1 when a given ID matched no dead notification."""
    wanted = list(dict.fromkeys(ids))  # the same ID twice is one notification
    with _services(config) as graph:
        requeued = graph.notifications.requeue(None if everything else wanted)
    for notification_id in requeued:
        print(f"re-queued {notification_id}")
    print(f"re-queued {len(requeued)} notifications")
    missing = [notification_id for notification_id in wanted if notification_id not in set(requeued)]
    for notification_id in missing:
        print(f"not re-queued: no dead notification {notification_id}", file=sys.stderr)
    return 1 if missing else 0


def reconcile(config: Config, once: bool, dry_run: bool) -> int:
    """Settle PENDING payments and refunds: one pass (--once, --dry-run), or a pass every RECONCILE_INTERVAL."""
    with _services(config) as graph:
        reconciler = graph.reconciler
        if once or dry_run:
            report = reconciler.run_once(dry_run=dry_run)
            verb = "would settle" if dry_run else "settled"
            for decision in report.decisions:
                print(("[dry run] " if dry_run else "") + decision.describe())
            settled = sum(1 for decision in report.decisions if decision.status)
            counts = (
                ", ".join(f"{result} {count}" for result, count in sorted(report.counts().items())) or "nothing due"
            )
            print(f"{verb} {settled} of {len(report.decisions)} rows looked up ({counts})")
            payments, refunds = reconciler.pending_totals()
            print(
                f"PENDING now: {payments} payments, {refunds} refunds (rows not looked up are younger than"
                " RECONCILE_MIN_AGE, waiting out their back-off, or still in their request's hands)"
            )
            if dry_run:
                print("dry run: no payment or refund was changed, and nothing asked the gateway to move money")
            return 0
        interval = config.RECONCILE_INTERVAL or 60.0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"reconciling every {interval:g} s; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                try:
                    report = reconciler.run_once()
                    if report.decisions:
                        print(f"pass: {report.counts()}", flush=True)
                except DatabaseUnavailableError as exc:
                    print(database_failure(config, exc), file=sys.stderr, flush=True)
                if stop.wait(interval):
                    break
        return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per operation, each with its own --help."""
    parser = argparse.ArgumentParser(
        prog="python manage.py",
        description="Payment service operator commands.",
        epilog="Exit status: 0 done, 1 database failure or unknown ID, 2 bad arguments or settings.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "purge",
        help="delete expired idempotency keys and old delivered notifications",
        description="Delete idempotency keys older than IDEMPOTENCY_KEY_TTL and notifications delivered more than"
        " NOTIFY_RETENTION seconds ago, in batches (what the housekeeping loop of each process does every"
        " HOUSEKEEPING_INTERVAL seconds).",
    )
    commands.add_parser(
        "purge-idempotency-keys",
        help="delete expired idempotency keys (run e.g. hourly from cron)",
        description="Delete idempotency keys older than IDEMPOTENCY_KEY_TTL.",
    )
    dispatch = commands.add_parser(
        "dispatch-notifications",
        help="deliver outbox notifications",
        description="Deliver outbox notifications until SIGTERM or Ctrl-C (or, with --once, what is due now).",
    )
    dispatch.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    dead = commands.add_parser(
        "dead-notifications",
        help="list notifications that ran out of attempts",
        description="List dead notifications, oldest first: id, event, attempts, when it died, last error.",
    )
    dead.add_argument(
        "--limit", type=_limit, default=100, metavar="N", help=f"show at most N (1-{MAX_LIMIT}, default 100)"
    )
    requeue = commands.add_parser(
        "requeue-notifications",
        help="make dead notifications due again",
        description="Make dead notifications due again with fresh attempts. "
        "Exits 1 (after re-queuing the others) when an ID is not a dead notification.",
    )
    requeue.add_argument(
        "ids", nargs="*", type=_notification_id, metavar="ID", help="e.g. payment-12-success, refund-3, receipt-4"
    )
    requeue.add_argument("--all", action="store_true", help="every dead notification")
    requeue.set_defaults(usage_error=requeue.error)  # prints this command's usage, exits 2
    settle = commands.add_parser(
        "reconcile",
        help="settle PENDING payments and refunds against the gateway",
        description="Look up PENDING payments and refunds older than RECONCILE_MIN_AGE at the gateway and settle"
        " them (each in one transaction with its notification); runs a pass every RECONCILE_INTERVAL seconds until"
        " SIGTERM or Ctrl-C, or one pass with --once.",
    )
    settle.add_argument("--once", action="store_true", help="one pass over what is due now, then exit")
    settle.add_argument(
        "--dry-run", action="store_true", help="one pass that only says what it would do: no writes, no money moved"
    )
    check = commands.add_parser(
        "check",
        help="check the settings without starting anything (--deploy: as for production)",
        description="Read the settings as the service would and print every problem, one line each, without"
        " touching the database. With --deploy, also every setting unsafe for a production deployment, whatever"
        " APP_ENV says (after Django's check --deploy). Exits 1 when there is a finding, 0 otherwise.",
    )
    check.add_argument(
        "--deploy", action="store_true", help="also report what APP_ENV=production would refuse, and the mode itself"
    )
    return parser


def check_settings(deploy: bool) -> int:
    """Print every problem of the environment's settings (for production with `deploy`); 1 if any."""
    try:
        config = Config.from_env(refuse_unsafe=False)
    except ConfigError as exc:
        findings = exc.problems  # unreadable values: the rest cannot be judged until they are fixed
    else:
        findings = config.deploy_findings() if deploy else config.contradictions()
        if not deploy and config.APP_ENV == "production":
            findings += config.production_findings()
    for finding in findings:
        print(f"finding: {finding}")
    scope = "a production deployment" if deploy else "this environment"
    if findings:
        print(f"{len(findings)} finding{'s' if len(findings) != 1 else ''} for {scope}")
        return 1
    print(f"no findings for {scope}")
    return 0


def database_failure(config: Config, exc: Exception) -> str:
    """One line for stderr naming host:port/database and the reason, never the password."""
    where = config.describe_database()
    if isinstance(exc, DatabaseUnavailableError):
        if exc.message.startswith("cannot connect to "):  # from wait_for_database: already says where and why
            return f"database unavailable: {exc.message}"
        cause = exc.__cause__
        reason = connection_failure_reason(cause) if isinstance(cause, psycopg2.Error) else exc.message
        return f"database unavailable: {where}: {reason}"
    first_line = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    hint = " (run python database_setup.py)" if isinstance(exc, psycopg2.errors.UndefinedTable) else ""
    return f"database error on {where}: {first_line.strip()}{hint}"


def run(config: Config, args: argparse.Namespace) -> int:
    """Run the parsed command against the database `config` names."""
    # One connection first, so an unreachable database is reported as such before anything starts.
    wait_for_database(config.get_database_uri(), config.DB_CONNECT_TIMEOUT, 0, where=config.describe_database())
    if args.command == "purge":
        keys, notifications = purge(config)
        print(f"purged {keys} expired idempotency keys and {notifications} delivered notifications")
        return 0
    if args.command == "purge-idempotency-keys":
        print(f"purged {purge_idempotency_keys(config)} expired idempotency keys")
        return 0
    if args.command == "dispatch-notifications":
        return dispatch_notifications(config, args.once)
    if args.command == "dead-notifications":
        return dead_notifications(config, args.limit)
    if args.command == "reconcile":
        return reconcile(config, args.once, args.dry_run)
    return requeue_notifications(config, args.ids, args.all)


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit 1 on a database problem, 2 on bad arguments or configuration."""
    parser = build_parser()
    args = parser.parse_args(argv)  # bad arguments: usage and the error on stderr, exit 2
    if args.command == "requeue-notifications":
        if bool(args.ids) == bool(args.all):
            args.usage_error("give either --all or one or more IDs" + (", not both" if args.all else ""))
        if len(args.ids) > MAX_IDS:
            args.usage_error(f"at most {MAX_IDS} IDs at once (or --all)")

    configure_logging("WARNING", json_lines=False, stream=sys.stderr)  # stdout is the command's output
    if args.command == "check":
        return check_settings(args.deploy)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print("\n".join(exc.lines()), file=sys.stderr)
        return 2
    try:
        return run(config, args)
    except (DatabaseUnavailableError, psycopg2.Error) as exc:
        print(database_failure(config, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
