"""`python database_setup.py` as an operator runs it: idempotent, loud on bad input, destructive only on --reset."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from config import Config
from tests.helpers import closed_port, config_for_database, create_database, database_env, drop_database, payment_count

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def target(base_config: Config) -> Iterator[Config]:
    """Configuration naming a database that does not exist yet; dropped afterwards."""
    name = create_database(base_config, "payments_setup")
    drop_database(base_config, name)  # only reserve a unique name: the script must create it
    yield config_for_database(base_config, name)
    drop_database(base_config, name)


def run_setup(config: Config, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "database_setup.py", *args],
        cwd=ROOT,
        env=database_env(config, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def seed_rows() -> int:
    return len((ROOT / "rhfd_payments.csv").read_text().strip().splitlines()) - 1


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_running_twice_creates_migrates_and_seeds_once(target: Config) -> None:
    first = run_setup(target)
    second = run_setup(target)

    assert first.returncode == 0, first.stderr
    assert f"created database {target.DB_NAME}" in first.stdout
    assert f"payments stored: {seed_rows()}" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "schema up to date" in second.stdout
    assert f"{seed_rows()} rows in file, 0 inserted" in second.stdout
    assert payment_count(target) == seed_rows()


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_a_malformed_csv_is_reported_and_nothing_is_loaded(target: Config, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    lines = (ROOT / "rhfd_payments.csv").read_text().splitlines()
    fields = lines[10].split(",")
    fields[3] = "CHEQUE"  # the method column
    lines[10] = ",".join(fields)
    bad.write_text("\n".join(lines) + "\n")

    result = run_setup(target, "--csv", str(bad))

    assert result.returncode == 1
    assert "line 11" in result.stderr and "method" in result.stderr
    assert "nothing loaded" in result.stderr
    assert payment_count(target) == 0


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_seed_csv_can_come_from_the_environment_and_no_seed_skips_it(target: Config, tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text(
        "payment_id,trip_id,amount,method,status,reference,created_at\n"
        "1,10,5.00,CASH,SUCCESS,PAY-X,2025-10-01 06:00:00\n"
    )

    assert run_setup(target, "--no-seed").returncode == 0
    assert payment_count(target) == 0
    assert run_setup(target, SEED_CSV=str(small)).returncode == 0
    assert payment_count(target) == 1


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_an_index_build_behind_a_long_transaction_fails_naming_it_and_the_next_run_finishes(target: Config) -> None:
    assert run_setup(target, "--no-seed").returncode == 0
    conn = psycopg2.connect(target.get_database_uri())
    report = psycopg2.connect(target.get_database_uri(), application_name="nightly-report")
    try:
        with conn.cursor() as cur:  # the database as it was before 0010
            cur.execute("DROP INDEX notification_outbox_delivered_idx")
            cur.execute("DELETE FROM schema_migrations WHERE version = '0010'")
        conn.commit()
        report.set_session(isolation_level="REPEATABLE READ")
        with report.cursor() as cur:  # a snapshot the concurrent build must wait for
            cur.execute("SELECT count(*) FROM payment_receipts")

        stuck = run_setup(target, "--no-seed", DB_MIGRATION_LOCK_TIMEOUT="0.5")
        report.rollback()
        finished = run_setup(target, "--no-seed", DB_MIGRATION_LOCK_TIMEOUT="0.5")

        with conn.cursor() as cur:
            cur.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'notification_outbox_delivered_idx'::regclass"
            )
            valid = cur.fetchone()[0]
    finally:
        report.close()
        conn.close()

    assert stuck.returncode == 1
    assert (
        "database set-up failed: migration 0010_outbox_retention, statement 1 of 1: waited more than 0.5 s"
    ) in stuck.stderr
    assert "nightly-report" in stuck.stderr
    assert finished.returncode == 0, finished.stderr
    assert "migrations applied now: 0010" in finished.stdout
    assert valid is True


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_only_reset_destroys_data(target: Config, tmp_path: Path) -> None:
    assert run_setup(target).returncode == 0

    reset = run_setup(target, "--reset", "--no-seed")

    assert reset.returncode == 0, reset.stderr
    assert "dropped" in reset.stdout
    assert payment_count(target) == 0


def test_an_unreachable_database_is_a_clear_failure_not_a_traceback(base_config: Config) -> None:
    config = base_config.with_overrides(
        {"DATABASE_URL": None, "DB_HOST": "127.0.0.1", "DB_PORT": closed_port(), "DB_NAME": "x"}
    )

    result = run_setup(config)

    assert result.returncode == 1
    assert f"database set-up failed: cannot connect to 127.0.0.1:{config.DB_PORT}/x: connection refused" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_waiting_for_an_unreachable_database_says_how_long_and_hides_the_password(base_config: Config) -> None:
    port = closed_port()
    config = base_config.with_overrides({"DATABASE_URL": f"postgresql://payer:s3cret-pw@127.0.0.1:{port}/payments"})

    result = run_setup(config, "--wait", "0.5")

    assert result.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}/payments: connection refused (still failing after 0.5s" in (
        result.stderr
    )
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_database_in_database_url_is_named(base_config: Config) -> None:
    config = config_for_database(base_config, "payments_does_not_exist")
    config = config.with_overrides({"DATABASE_URL": config.get_database_uri()})

    result = run_setup(config)

    assert result.returncode == 1
    assert '/payments_does_not_exist: unknown database "payments_does_not_exist"' in result.stderr
    assert "Traceback" not in result.stderr


def test_an_invalid_setting_stops_setup_naming_it(base_config: Config) -> None:
    result = run_setup(base_config, DB_PORT="-1")

    assert result.returncode == 2
    assert "DB_PORT" in result.stderr


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="creating the database needs DB_* settings")
def test_the_shipped_seed_loads_as_rupees_whatever_currency_and_another_file_in_currency(
    target: Config, tmp_path: Path
) -> None:
    yen = tmp_path / "yen.csv"
    yen.write_text(
        "payment_id,trip_id,amount,method,status,reference,created_at\n"
        "90001,9001,31.25,CASH,SUCCESS,PAY-Y,2025-10-01 06:00:00\n"
    )

    shipped = run_setup(target, CURRENCY="JPY")
    refused = run_setup(target, "--csv", str(yen), CURRENCY="JPY")

    # The shipped file is priced in rupees (scripts/generate_seed_csv.py): 31.25 yen would be no amount.
    assert shipped.returncode == 0, shipped.stderr
    with psycopg2.connect(target.get_database_uri()) as conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT currency FROM payments")
        assert cur.fetchall() == [("INR",)]
    assert refused.returncode == 1
    assert "line 2: amount 31.25 has more decimals than JPY has" in refused.stderr
    assert payment_count(target) == seed_rows()
