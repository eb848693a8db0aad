"""Versioned migrations: applied once, recorded, safe to re-run, edits to applied files refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from config import Config
from database.migrate import MigrationError, apply_migrations, discover, pending_migrations
from services.gateways.registry import NAME_RE
from tests.helpers import config_for_database, create_database, drop_database


@pytest.fixture
def scratch(base_config: Config) -> Iterator[psycopg2.extensions.connection]:
    """A connection to a brand-new empty database, dropped afterwards."""
    name = create_database(base_config, "payments_migrate")
    conn = psycopg2.connect(config_for_database(base_config, name).get_database_uri())
    yield conn
    conn.close()
    drop_database(base_config, name)


def _tables(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in cur.fetchall()}


def test_first_run_creates_the_schema_and_records_every_version(scratch: psycopg2.extensions.connection) -> None:
    assert pending_migrations(scratch) == [m.version for m in discover()]

    applied = apply_migrations(scratch)

    assert applied == [m.version for m in discover()]
    assert {"payments", "payment_refunds", "payment_receipts", "idempotency_keys", "schema_migrations"} <= _tables(
        scratch
    )
    assert pending_migrations(scratch) == []


def test_rerun_applies_nothing_and_keeps_data(scratch: psycopg2.extensions.connection) -> None:
    apply_migrations(scratch)
    with scratch.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference) VALUES (7, 9.5, 'UPI', 'SUCCESS', 'r')"
        )
    scratch.commit()

    assert apply_migrations(scratch) == []

    with scratch.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        assert cur.fetchone()[0] == 1


def test_a_new_migration_file_is_applied_on_the_next_run(
    scratch: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    for migration in discover():
        (tmp_path / f"{migration.name}.sql").write_text(migration.sql)
    apply_migrations(scratch, tmp_path)
    (tmp_path / "9999_add_note.sql").write_text("ALTER TABLE payments ADD COLUMN note TEXT;")

    assert apply_migrations(scratch, tmp_path) == ["9999"]
    assert apply_migrations(scratch, tmp_path) == []


def test_an_edited_applied_migration_is_refused(scratch: psycopg2.extensions.connection, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id int);")
    apply_migrations(scratch, tmp_path)
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id bigint);")

    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(scratch, tmp_path)


def test_a_failing_migration_applies_nothing(scratch: psycopg2.extensions.connection, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE broken (id nonsense_type);")

    with pytest.raises(psycopg2.Error):
        apply_migrations(scratch, tmp_path)

    assert "ok_table" not in _tables(scratch)


def test_badly_named_migration_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "add_things.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"0001_name\.sql"):
        discover(tmp_path)


def test_schema_enforces_one_live_payment_per_trip(db: psycopg2.extensions.connection) -> None:
    insert = "INSERT INTO payments (trip_id, amount, method, status, reference) VALUES (42, 10, 'CARD', %s, %s)"
    with db.cursor() as cur:
        cur.execute(insert, ("FAILED", "a"))
        cur.execute(insert, ("FAILED", "b"))
        cur.execute(insert, ("SUCCESS", "c"))
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute(insert, ("PENDING", "d"))


@pytest.mark.parametrize(
    ("column", "value"),
    [("method", "BITCOIN"), ("status", "PAID"), ("amount", "-1"), ("amount", "123456789.00"), ("trip_id", "0")],
)
def test_schema_rejects_invalid_values(db: psycopg2.extensions.connection, column: str, value: str) -> None:
    row = {"trip_id": "1", "amount": "10", "method": "CARD", "status": "SUCCESS", "reference": "x"}
    row[column] = value
    with db.cursor() as cur, pytest.raises((psycopg2.errors.CheckViolation, psycopg2.errors.NumericValueOutOfRange)):
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference)"
            " VALUES (%(trip_id)s, %(amount)s, %(method)s, %(status)s, %(reference)s)",
            row,
        )


def test_refunds_can_never_exceed_the_amount_in_the_schema(db: psycopg2.extensions.connection) -> None:
    with db.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute(
            "INSERT INTO payments (trip_id, amount, amount_refunded, method, status, reference)"
            " VALUES (1, 10, 10.01, 'CARD', 'REFUNDED', 'x')"
        )


def test_0006_records_the_refunds_the_old_seed_loader_left_out(
    scratch: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    by_version = {migration.version: migration for migration in discover()}
    for migration in by_version.values():
        if migration.version < "0006":
            (tmp_path / f"{migration.name}.sql").write_text(migration.sql)
    apply_migrations(scratch, tmp_path)
    with scratch.cursor() as cur:
        # As the old loader stored a REFUNDED row: amount_refunded set, no refund record.
        cur.execute(
            "INSERT INTO payments (payment_id, trip_id, amount, amount_refunded, method, status, reference, updated_at)"
            " VALUES (1, 7, 40.00, 40.00, 'CARD', 'REFUNDED', 'old', '2025-10-02 09:00:00+00'),"
            "        (2, 8, 30.00, 10.00, 'CARD', 'PARTIALLY_REFUNDED', 'api', now())"
        )
        cur.execute("INSERT INTO payment_refunds (payment_id, refund_amount, reason) VALUES (2, 10.00, 'api')")
    scratch.commit()

    (tmp_path / f"{by_version['0006'].name}.sql").write_text(by_version["0006"].sql)

    assert apply_migrations(scratch, tmp_path) == ["0006"]

    with scratch.cursor() as cur:
        cur.execute("SELECT payment_id, refund_amount, reason, created_at FROM payment_refunds ORDER BY 1")
        rows = cur.fetchall()
    assert rows[0] == (1, Decimal("40.00"), "imported", datetime(2025, 10, 2, 9, tzinfo=UTC))
    assert [row[:3] for row in rows[1:]] == [(2, Decimal("10.00"), "api")]


@pytest.mark.parametrize("name", ["paypal", "adyen_v2", "a" * 32])
def test_any_gateway_name_in_the_format_is_stored_without_a_migration(
    db: psycopg2.extensions.connection, name: str
) -> None:
    assert NAME_RE.match(name)
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference, gateway)"
            " VALUES (1, 10, 'CARD', 'SUCCESS', 'x', %(name)s) RETURNING payment_id",
            {"name": name},
        )
        payment_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, refund_amount, reason, gateway)"
            " VALUES (%(id)s, 1, 'r', %(name)s)",
            {"id": payment_id, "name": name},
        )


@pytest.mark.parametrize("name", ["Stripe", "pay-pal", "2checkout", "", "a" * 33, "stripe\n"])
@pytest.mark.parametrize("table", ["payments", "payment_refunds"])
def test_a_gateway_name_out_of_the_format_is_refused_by_the_schema(
    db: psycopg2.extensions.connection, table: str, name: str
) -> None:
    assert not NAME_RE.match(name)
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference)"
            " VALUES (1, 10, 'CARD', 'SUCCESS', 'x') RETURNING payment_id"
        )
        payment_id = cur.fetchone()[0]
        with pytest.raises(psycopg2.errors.CheckViolation, match=f"{table}_gateway_check"):
            if table == "payments":
                cur.execute(
                    "UPDATE payments SET gateway = %(name)s WHERE payment_id = %(id)s", {"name": name, "id": payment_id}
                )
            else:
                cur.execute(
                    "INSERT INTO payment_refunds (payment_id, refund_amount, reason, gateway)"
                    " VALUES (%(id)s, 1, 'r', %(name)s)",
                    {"id": payment_id, "name": name},
                )


def test_0012_keeps_the_gateways_of_existing_rows_and_can_run_again(
    scratch: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    by_version = {migration.version: migration for migration in discover()}
    for migration in by_version.values():
        if migration.version < "0012":
            (tmp_path / f"{migration.name}.sql").write_text(migration.sql)
    apply_migrations(scratch, tmp_path)
    with scratch.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (payment_id, trip_id, amount, method, status, reference, gateway)"
            " VALUES (1, 7, 40.00, 'CARD', 'SUCCESS', 'a', 'simulator'),"
            "        (2, 8, 30.00, 'CARD', 'SUCCESS', 'b', 'stripe')"
        )
        cur.execute(
            "INSERT INTO payment_refunds (payment_id, refund_amount, reason, gateway) VALUES (2, 5, 'r', 'stripe')"
        )
    scratch.commit()
    # Before 0012 a name outside the list is refused.
    with scratch.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute("UPDATE payments SET gateway = 'paypal' WHERE payment_id = 1")
    scratch.rollback()
    (tmp_path / f"{by_version['0012'].name}.sql").write_text(by_version["0012"].sql)

    assert apply_migrations(scratch, tmp_path) == ["0012"]
    scratch.autocommit = True
    with scratch.cursor() as cur:
        # A run that failed half-way repeats every statement: each is safe to repeat.
        for statement in by_version["0012"].statements():
            cur.execute(statement)
        cur.execute("UPDATE payments SET gateway = 'paypal' WHERE payment_id = 1")
        cur.execute("SELECT payment_id, gateway FROM payments ORDER BY 1")
        assert cur.fetchall() == [(1, "paypal"), (2, "stripe")]
        cur.execute(
            "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname IN ('payments_gateway_check', 'payment_refunds_gateway_check') ORDER BY 1"
        )
        checks = cur.fetchall()
    assert [(name, valid) for name, valid, _ in checks] == [
        ("payment_refunds_gateway_check", True),
        ("payments_gateway_check", True),
    ]
    assert all("simulator" not in definition for _, _, definition in checks)
