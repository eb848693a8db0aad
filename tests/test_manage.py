"""Operator commands run as operators run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from config import Config
from tests.helpers import closed_port, config_for_database, database_env

ROOT = Path(__file__).resolve().parent.parent


COMMANDS = ("purge-idempotency-keys", "dispatch-notifications", "dead-notifications", "requeue-notifications")


def run_manage(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=database_env(config), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def unreachable(base_config: Config) -> Config:
    return base_config.with_overrides(
        {"DATABASE_URL": None, "DB_HOST": "127.0.0.1", "DB_PORT": closed_port(), "DB_NAME": "payments"}
    )


def add_dead_notification(db: psycopg2.extensions.connection, notification_id: str) -> None:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO notification_outbox (notification_id, event_type, payload, status, attempts, last_error)"
            " VALUES (%s, %s, '{}', 'DEAD', 8, 'HTTP 500')",
            (notification_id, notification_id.split("-")[0]),
        )


def test_purge_deletes_expired_keys_and_keeps_live_ones(
    test_config: Config, db: psycopg2.extensions.connection
) -> None:
    with db.cursor() as cur:
        for name, expiry in (("old", "now() - interval '1 minute'"), ("live", "now() + interval '1 hour'")):
            cur.execute(
                "INSERT INTO idempotency_keys (scope, key_hash, request_fingerprint, request_path, expires_at)"
                f" VALUES ('charge', lpad(%s, 64, '0'), repeat('f', 64), '/v1/payments/charge', {expiry})",
                (name,),
            )

    result = run_manage(test_config, "purge-idempotency-keys")

    assert result.returncode == 0, result.stderr
    assert "purged 1 expired" in result.stdout
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM idempotency_keys")
        assert cur.fetchone()[0] == 1


def test_purge_with_the_database_down_fails_clearly(base_config: Config) -> None:
    config = base_config.with_overrides({"DATABASE_URL": None, "DB_HOST": "127.0.0.1", "DB_PORT": closed_port()})

    result = run_manage(config, "purge-idempotency-keys")

    assert result.returncode == 1
    assert "database unavailable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("dead-notifications", "--limit", "-5"), "--limit: must be a whole number from 1 to 10000, got '-5'"),
        (("dead-notifications", "--limit", "\uff15"), "must be a whole number"),
        (("dead-notifications", "--limit", "0"), "--limit: must be from 1 to 10000"),
        (("dead-notifications", "--limit", "10001"), "--limit: must be from 1 to 10000"),
        (("dead-notifications", "--limit", "many"), "must be a whole number"),
        (("requeue-notifications", "abc"), "'abc' is not a notification id"),
        (("requeue-notifications", "refund-3", "payment-1"), "'payment-1' is not a notification id"),
        (("requeue-notifications",), "either --all or one or more IDs"),
        (("requeue-notifications", "--all", "refund-3"), "not both"),
        (("dispatch-notifications", "--forever"), "unrecognized arguments: --forever"),
        (("purge-everything",), "invalid choice"),
        ((), "required: COMMAND"),
    ],
)
def test_bad_arguments_are_a_usage_error_before_touching_the_database(
    base_config: Config, args: tuple[str, ...], complaint: str
) -> None:
    result = run_manage(unreachable(base_config), *args)  # a database is never reached for these

    assert result.returncode == 2
    assert result.stderr.startswith("usage: python manage.py")
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(base_config: Config, command: str) -> None:
    result = run_manage(unreachable(base_config), command, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python manage.py {command}")
    assert "Traceback" not in result.stdout + result.stderr


def test_top_level_help_lists_every_command(base_config: Config) -> None:
    result = run_manage(unreachable(base_config), "--help")

    assert result.returncode == 0
    assert all(command in result.stdout for command in COMMANDS)


@pytest.mark.parametrize(
    "args",
    [(command,) for command in COMMANDS if command != "requeue-notifications"] + [("requeue-notifications", "--all")],
)
def test_an_unreachable_database_names_where_and_why(base_config: Config, args: tuple[str, ...]) -> None:
    config = unreachable(base_config)

    result = run_manage(config, *args)

    assert result.returncode == 1
    assert f"database unavailable: cannot connect to 127.0.0.1:{config.DB_PORT}/payments: connection refused" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_the_password_in_database_url_is_never_printed(base_config: Config) -> None:
    port = closed_port()
    config = base_config.with_overrides({"DATABASE_URL": f"postgresql://payer:s3cret-pw@127.0.0.1:{port}/payments"})

    result = run_manage(config, "dead-notifications")

    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}/payments: connection refused" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_an_unknown_database_is_named(test_config: Config) -> None:
    config = config_for_database(test_config, "payments_does_not_exist")

    result = run_manage(config, "dead-notifications")

    assert result.returncode == 1
    assert "/payments_does_not_exist: unknown database" in result.stderr
    assert "Traceback" not in result.stderr


def test_dead_notifications_are_listed_up_to_the_limit(test_config: Config, db: psycopg2.extensions.connection) -> None:
    for notification_id in ("payment-12-success", "refund-3"):
        add_dead_notification(db, notification_id)

    result = run_manage(test_config, "dead-notifications", "--limit", "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("payment-12-success\tpayment\tattempts=8")
    assert "1 dead notifications" in result.stdout


def test_requeue_reports_ids_that_match_no_dead_notification(
    test_config: Config, db: psycopg2.extensions.connection
) -> None:
    add_dead_notification(db, "refund-3")

    result = run_manage(test_config, "requeue-notifications", "refund-3", "receipt-4", "refund-3")

    assert result.returncode == 1
    assert "re-queued refund-3" in result.stdout and "re-queued 1 notifications" in result.stdout
    assert "not re-queued: no dead notification receipt-4" in result.stderr
    with db.cursor() as cur:
        cur.execute("SELECT status, attempts FROM notification_outbox WHERE notification_id = 'refund-3'")
        assert cur.fetchone() == ("PENDING", 0)


def test_requeue_of_dead_ids_succeeds(test_config: Config, db: psycopg2.extensions.connection) -> None:
    add_dead_notification(db, "receipt-4")

    result = run_manage(test_config, "requeue-notifications", "receipt-4")

    assert result.returncode == 0, result.stderr
    assert "re-queued 1 notifications" in result.stdout


OWN_CSV = ROOT / "rhfd_payments.csv"
REFERENCE_CSV = Path("/work/shared/seed/reference_rhfd_payments.csv")


def payment_states(db: psycopg2.extensions.connection) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT payment_id, status, error_code, amount_refunded FROM payments ORDER BY payment_id")
        return cur.fetchall()


def load(config: Config, csv: Path) -> None:
    result = subprocess.run(
        [sys.executable, "database_setup.py", "--csv", str(csv)], cwd=ROOT, env=database_env(config),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "csv",
    [
        pytest.param(OWN_CSV, id="own-csv"),
        pytest.param(
            REFERENCE_CSV,
            id="reference-csv",
            marks=pytest.mark.skipif(not REFERENCE_CSV.exists(), reason="the reference's CSV is not on this machine"),
        ),
    ],
)
def test_reconcile_with_default_settings_fails_every_loaded_pending_row_as_unknown_to_the_gateway(
    csv: Path, test_config: Config, db: psycopg2.extensions.connection
) -> None:
    load(test_config, csv)
    pending = [row[0] for row in payment_states(db) if row[1] == "PENDING"]
    before = payment_states(db)

    dry = run_manage(test_config, "reconcile", "--dry-run")
    unchanged = payment_states(db)
    once = run_manage(test_config, "reconcile", "--once")
    again = run_manage(test_config, "reconcile", "--once")

    assert dry.returncode == 0, dry.stderr
    assert unchanged == before
    assert f"[dry run] payment {pending[0]}: no_record -> FAILED GATEWAY_NO_RECORD" in dry.stdout
    assert f"would settle {len(pending)} of {len(pending)} rows looked up (no_record {len(pending)})" in dry.stdout
    assert "nothing asked the gateway to move money" in dry.stdout
    assert once.returncode == 0, once.stderr
    assert f"settled {len(pending)} of {len(pending)} rows looked up (no_record {len(pending)})" in once.stdout
    assert "settled 0 of 0 rows looked up (nothing due)" in again.stdout
    after = {row[0]: row for row in payment_states(db)}
    assert {after[payment_id][1:3] for payment_id in pending} == {("FAILED", "GATEWAY_NO_RECORD")}
    assert {row[0]: row for row in before if row[0] not in pending} == {
        payment_id: row for payment_id, row in after.items() if payment_id not in pending
    }
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM payments p WHERE status = 'PENDING'"
            " OR EXISTS (SELECT 1 FROM payments q WHERE q.trip_id = p.trip_id AND q.status <> 'FAILED'"
            "            AND q.payment_id <> p.payment_id AND p.status <> 'FAILED')"
        )
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM notification_outbox WHERE payload->>'status' = 'FAILED'")
        assert cur.fetchone()[0] == len(pending)


def test_the_trip_of_a_settled_loaded_payment_can_be_charged_again(
    test_config: Config, db: psycopg2.extensions.connection, make_app: Any, trips: Any
) -> None:
    load(test_config, OWN_CSV)
    with db.cursor() as cur:
        cur.execute("SELECT trip_id FROM payments WHERE status = 'PENDING' ORDER BY payment_id LIMIT 1")
        [trip_id] = cur.fetchone()
    app = make_app(TRIP_SERVICE_URL=trips.url, GATEWAY_SUCCESS_RATE=1.0)
    trips.trip(trip_id)
    body = {"idempotency_key": "after-reconcile", "trip_id": trip_id, "method": "CARD"}

    blocked = app.test_client().post("/v1/payments/charge", json=body)
    run_manage(test_config, "reconcile", "--once")
    charged = app.test_client().post("/v1/payments/charge", json={**body, "idempotency_key": "again"})

    assert (blocked.status_code, blocked.get_json()["code"]) == (409, "trip_already_paid")
    assert (charged.status_code, charged.get_json()["status"]) == (201, "SUCCESS")


def test_check_needs_no_database_and_finds_nothing_wrong_with_the_defaults(base_config: Config) -> None:
    result = run_manage(unreachable(base_config), "check")

    assert (result.returncode, result.stdout.strip()) == (0, "no findings for this environment")


def test_check_deploy_prints_every_finding_for_production_and_exits_1(base_config: Config) -> None:
    env = database_env(unreachable(base_config), DEBUG="true")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    findings = [line.removeprefix("finding: ") for line in result.stdout.splitlines() if line.startswith("finding: ")]
    assert [finding.split(" ")[0].split("=")[0] for finding in findings] == [
        "GATEWAY", "DEBUG", "API_KEYS", "NOTIFY_SIGNING_SECRET", "APP_ENV",
    ]  # fmt: skip
    assert result.stdout.splitlines()[-1] == "5 findings for a production deployment"


def test_check_reports_unreadable_settings_as_findings_without_a_traceback(base_config: Config) -> None:
    env = {**database_env(unreachable(base_config)), "DB_POOL_SIZE": "0", "LOG_LEVEL": "LOUD"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert "finding: LOG_LEVEL must be one of" in result.stdout
    assert "finding: DB_POOL_SIZE must be between 1 and 500, got 0" in result.stdout
    assert "Traceback" not in result.stderr
