"""payment_transactions: the history 0011 gives old rows and the seed loader loaded ones; the ledger check."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from config import Config
from database.migrate import apply_migrations, discover
from database.seed import load_csv
from database_setup import DEFAULT_CSV
from tests.helpers import (
    config_for_database,
    create_database,
    drop_database,
    ledger_problems,
    loaded_history_problems,
    transactions_of,
)

# A consistent ledger written row by row: a card charge, a partly refunded one (a refund that went
# through, one refused), a refused charge, one in flight, a captured hold and a CASH charge.
CONSISTENT = """
INSERT INTO payments (payment_id, trip_id, amount, amount_refunded, authorized_amount, method, status, reference,
                      gateway)
OVERRIDING SYSTEM VALUE
VALUES (1, 1, 31.25, 0, NULL, 'CARD', 'SUCCESS', 'p1', 'simulator'),
       (2, 2, 40.00, 10.00, NULL, 'CARD', 'PARTIALLY_REFUNDED', 'p2', 'simulator'),
       (3, 3, 12.00, 0, NULL, 'UPI', 'FAILED', 'p3', 'simulator'),
       (4, 4, 15.00, 0, NULL, 'WALLET', 'PENDING', 'p4', 'simulator'),
       (5, 5, 25.00, 0, 40.00, 'CARD', 'SUCCESS', 'p5', 'simulator'),
       (6, 6, 9.00, 0, NULL, 'CASH', 'SUCCESS', 'p6', NULL);
INSERT INTO payment_refunds (refund_id, payment_id, refund_amount, status, gateway, error_code)
OVERRIDING SYSTEM VALUE
VALUES (1, 2, 10.00, 'SUCCEEDED', 'simulator', NULL), (2, 2, 5.00, 'FAILED', 'simulator', 'GATEWAY_ERROR');
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, error_code, refund_id)
VALUES (1, 'PURCHASE', 'SUCCEEDED', 31.25, 'INR', 'simulator', NULL, NULL),
       (2, 'PURCHASE', 'SUCCEEDED', 40.00, 'INR', 'simulator', NULL, NULL),
       (2, 'REFUND', 'SUCCEEDED', 10.00, 'INR', 'simulator', NULL, 1),
       (2, 'REFUND', 'FAILED', 5.00, 'INR', 'simulator', 'GATEWAY_ERROR', 2),
       (3, 'PURCHASE', 'FAILED', 12.00, 'INR', 'simulator', 'CARD_DECLINED', NULL),
       (4, 'PURCHASE', 'PENDING', 15.00, 'INR', 'simulator', NULL, NULL),
       (5, 'AUTHORIZE', 'SUCCEEDED', 40.00, 'INR', 'simulator', NULL, NULL),
       (5, 'CAPTURE', 'SUCCEEDED', 25.00, 'INR', 'simulator', NULL, NULL),
       (6, 'PURCHASE', 'SUCCEEDED', 9.00, 'INR', NULL, NULL, NULL)
"""


@pytest.fixture
def scratch(base_config: Config) -> Iterator[psycopg2.extensions.connection]:
    """A connection (autocommit) to a brand-new empty database, dropped afterwards."""
    name = create_database(base_config, "payments_history")
    conn = psycopg2.connect(config_for_database(base_config, name).get_database_uri(), options="-c timezone=UTC")
    conn.autocommit = True
    yield conn
    conn.close()
    drop_database(base_config, name)


def migrate_before(conn: psycopg2.extensions.connection, version: str, directory: Path) -> list[str]:
    """Apply the migrations older than `version` only (copied into `directory`), as an older release would."""
    directory.mkdir(exist_ok=True)
    for migration in discover():
        if migration.version < version:
            (directory / f"{migration.name}.sql").write_text(migration.sql)
    return apply_migrations(conn, directory)


def history(db: psycopg2.extensions.connection, payment_id: int) -> list[tuple[object, ...]]:
    """(kind, status, amount, gateway, error_code) of each transaction of the payment, oldest first."""
    return [
        (t["kind"], t["status"], t["amount"], t["gateway"], t["error_code"]) for t in transactions_of(db, payment_id)
    ]


def execute(db: psycopg2.extensions.connection, statement: str) -> None:
    """Run statements on an autocommit connection."""
    with db.cursor() as cur:
        cur.execute(statement)


def test_a_consistent_ledger_has_no_problems(db: psycopg2.extensions.connection) -> None:
    assert ledger_problems(db) == []
    execute(db, CONSISTENT)

    assert ledger_problems(db) == []


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (
            "UPDATE payment_transactions SET amount = 31.00 WHERE payment_id = 1",
            "payment 1 (SUCCESS, amount 31.25): its SUCCEEDED PURCHASE/CAPTURE transactions sum to 31.00",
        ),
        (
            "UPDATE payment_transactions SET status = 'FAILED' WHERE payment_id = 5 AND kind = 'CAPTURE'",
            "payment 5 (SUCCESS, amount 25.00): its SUCCEEDED PURCHASE/CAPTURE transactions sum to 0",
        ),
        (
            "INSERT INTO payment_transactions (payment_id, kind, status, amount, currency)"
            " VALUES (3, 'PURCHASE', 'SUCCEEDED', 12.00, 'INR')",
            "payment 3 (FAILED, amount 12.00): its SUCCEEDED PURCHASE/CAPTURE transactions sum to 12.00",
        ),
        (
            "UPDATE payments SET amount_refunded = 15.00 WHERE payment_id = 2",
            "payment 2 (amount 40.00): amount_refunded 15.00, REFUND transactions not FAILED 10.00,"
            " refund records not FAILED 10.00",
        ),
        (
            "DELETE FROM payment_transactions WHERE refund_id = 2",
            "refund 2 of payment 2 (FAILED, 5.00): no REFUND transaction",
        ),
        (
            "UPDATE payment_transactions SET status = 'PENDING', error_code = NULL WHERE refund_id = 2",
            "refund 2 of payment 2 (FAILED, 5.00) has transaction 4 of payment 2 (PENDING, 5.00)",
        ),
        (
            "UPDATE payment_transactions SET status = 'SUCCEEDED' WHERE payment_id = 4",
            "payment 4 (PENDING): PENDING operations 0, expected 1",
        ),
        (
            "INSERT INTO payment_transactions (payment_id, kind, status, amount, currency)"
            " VALUES (6, 'PURCHASE', 'PENDING', 9.00, 'INR')",
            "payment 6 (SUCCESS): PENDING operations 1, expected 0",
        ),
        (
            "DELETE FROM payment_transactions WHERE payment_id = 3",
            "payment 3 has no PURCHASE transaction",
        ),
        (
            "UPDATE payment_transactions SET kind = 'PURCHASE' WHERE payment_id = 5 AND kind = 'AUTHORIZE'",
            "payment 5 has no AUTHORIZE transaction",
        ),
        (
            "UPDATE payment_transactions SET currency = 'USD' WHERE payment_id = 6",
            "transaction 9 of payment 6 is in USD, the payment in INR",
        ),
    ],
)
def test_each_break_of_the_ledger_is_named(db: psycopg2.extensions.connection, breakage: str, problem: str) -> None:
    execute(db, CONSISTENT)
    execute(db, breakage)

    assert problem in ledger_problems(db)


def test_the_check_reads_through_a_dsn_too(test_config: Config, db: psycopg2.extensions.connection) -> None:
    execute(db, CONSISTENT)
    execute(db, "UPDATE payment_transactions SET amount = 31.00 WHERE payment_id = 1")

    assert len(ledger_problems(test_config.get_database_uri())) == 1


def test_the_shipped_seed_file_loads_with_its_history(test_config: Config, db: psycopg2.extensions.connection) -> None:
    conn = psycopg2.connect(test_config.get_database_uri())
    try:
        result = load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()

    with db.cursor() as cur:
        cur.execute("SELECT payment_id FROM payments ORDER BY payment_id")
        loaded = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT kind, status, count(*) FROM payment_transactions GROUP BY 1, 2 ORDER BY 1, 2")
        counts = {(kind, status): n for kind, status, n in cur.fetchall()}
        cur.execute("SELECT status, count(*) FROM payments GROUP BY 1")
        by_status = dict(cur.fetchall())
        cur.execute("SELECT payment_id FROM payments WHERE method = 'CASH' AND status = 'SUCCESS' LIMIT 1")
        cash = cur.fetchone()[0]
    assert len(loaded) == result.inserted == result.rows_in_file
    assert ledger_problems(db) == []
    assert loaded_history_problems(db, loaded) == []
    assert counts == {
        ("PURCHASE", "FAILED"): by_status["FAILED"],
        ("PURCHASE", "PENDING"): by_status["PENDING"],
        ("PURCHASE", "SUCCEEDED"): by_status["SUCCESS"] + by_status["PARTIALLY_REFUNDED"] + by_status["REFUNDED"],
        ("REFUND", "SUCCEEDED"): by_status["PARTIALLY_REFUNDED"] + by_status["REFUNDED"],
    }
    amount = history(db, cash)[0][2]
    assert history(db, cash) == [("PURCHASE", "SUCCEEDED", amount, None, None)]


def test_loading_the_seed_file_twice_adds_no_transactions(
    test_config: Config, db: psycopg2.extensions.connection
) -> None:
    conn = psycopg2.connect(test_config.get_database_uri())
    try:
        load_csv(conn, DEFAULT_CSV, "INR")
        first = [transactions_of(db, payment_id) for payment_id in (1, 3, 11)]
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()

    assert [transactions_of(db, payment_id) for payment_id in (1, 3, 11)] == first
    assert ledger_problems(db) == []


def test_a_row_the_old_loader_left_unrefunded_gets_its_refund_transaction_when_repaired(
    scratch: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    migrate_before(scratch, "0011", tmp_path / "old")
    # As the loader before issue 16 stored a PARTIALLY_REFUNDED row: no refunded amount, no record.
    execute(
        scratch,
        "INSERT INTO payments (payment_id, trip_id, amount, amount_refunded, method, status, reference, created_at)"
        " OVERRIDING SYSTEM VALUE VALUES (6, 105, 50.00, 0, 'CARD', 'PARTIALLY_REFUNDED', 'PAY-6', '2025-10-03 10:00')",
    )
    apply_migrations(scratch)
    csv = tmp_path / "payments.csv"
    csv.write_text(
        "payment_id,trip_id,amount,method,status,reference,created_at,amount_refunded\n"
        "6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,12.34\n"
    )

    scratch.autocommit = False  # the loader takes its lock in a transaction of its own
    result = load_csv(scratch, csv, "INR")
    scratch.autocommit = True

    assert (result.inserted, result.repaired) == (0, 1)
    assert history(scratch, 6) == [
        ("PURCHASE", "SUCCEEDED", Decimal("50.00"), None, None),
        ("REFUND", "SUCCEEDED", Decimal("12.34"), None, None),
    ]
    assert ledger_problems(scratch) == []


# Rows of every shape an earlier release could leave, written before 0011 runs.
BEFORE_0011 = """
INSERT INTO payments (payment_id, trip_id, amount, amount_refunded, authorized_amount, method, status, reference,
                      gateway, gateway_reference, error_code, hold_action, capture_amount, currency)
OVERRIDING SYSTEM VALUE
VALUES (11, 11, 31.25, 0, NULL, 'CARD', 'SUCCESS', 'charged', 'simulator', 'sim_11', NULL, NULL, NULL, 'INR'),
       (12, 12, 31.25, 0, NULL, 'CARD', 'FAILED', 'refused', 'simulator', 'sim_12', 'CARD_DECLINED', NULL, NULL, 'INR'),
       (13, 13, 31.25, 0, NULL, 'UPI', 'PENDING', 'in flight', 'simulator', NULL, NULL, NULL, NULL, 'INR'),
       (14, 14, 7.00, 7.00, NULL, 'CASH', 'REFUNDED', 'cash', NULL, NULL, NULL, NULL, NULL, 'INR'),
       (15, 15, 40.00, 0, 40.00, 'CARD', 'AUTHORIZED', 'held', 'simulator', 'sim_15', NULL, NULL, NULL, 'INR'),
       (16, 16, 25.00, 20.00, 40.00, 'CARD', 'PARTIALLY_REFUNDED', 'captured', 'stripe', 'pi_16', NULL, NULL, NULL,
        'INR'),
       (17, 17, 40.00, 0, 40.00, 'CARD', 'VOIDED', 'voided', 'simulator', 'sim_17', NULL, NULL, NULL, 'INR'),
       (18, 18, 40.00, 0, 40.00, 'CARD', 'PENDING', 'capturing', 'simulator', 'sim_18', NULL, 'capture', 30.00, 'INR'),
       (19, 19, 40.00, 0, 40.00, 'CARD', 'PENDING', 'voiding', 'simulator', 'sim_19', NULL, 'void', NULL, 'INR'),
       (20, 20, 40.00, 0, 40.00, 'CARD', 'PENDING', 'expiring', 'simulator', 'sim_20', NULL, 'expire', NULL, 'INR'),
       (21, 21, 40.00, 0, 40.00, 'CARD', 'PENDING', 'holding', 'simulator', NULL, NULL, NULL, NULL, 'INR'),
       (22, 22, 40.00, 0, 40.00, 'CARD', 'FAILED', 'not held', 'simulator', 'sim_22', 'INSUFFICIENT_FUNDS', NULL, NULL,
        'INR'),
       (23, 23, 1520.00, 0, NULL, 'CARD', 'SUCCESS', 'yen', 'stripe', 'pi_23', NULL, NULL, NULL, 'JPY');
INSERT INTO payment_refunds (payment_id, refund_amount, reason, status, gateway, gateway_reference, error_code)
VALUES (14, 7.00, NULL, 'SUCCEEDED', NULL, NULL, NULL),
       (16, 15.00, 'detour', 'SUCCEEDED', 'stripe', 're_1', NULL),
       (16, 5.00, NULL, 'PENDING', 'stripe', NULL, NULL),
       (16, 10.00, NULL, 'FAILED', 'stripe', 're_3', 'GATEWAY_ERROR')
"""


def test_0011_gives_every_existing_payment_its_history(scratch: psycopg2.extensions.connection, tmp_path: Path) -> None:
    migrate_before(scratch, "0007", tmp_path / "early")
    # A 0.00 payment an early version wrote (0007 refuses new ones): nothing moved, so it gets nothing.
    execute(
        scratch,
        "INSERT INTO payments (payment_id, trip_id, amount, method, status, reference) OVERRIDING SYSTEM VALUE"
        " VALUES (10, 10, 0.00, 'CARD', 'SUCCESS', 'free')",
    )
    migrate_before(scratch, "0011", tmp_path / "old")
    execute(scratch, BEFORE_0011)

    assert migrate_before(scratch, "0012", tmp_path / "new") == ["0011"]

    s, f, p, sim = "SUCCEEDED", "FAILED", "PENDING", "simulator"
    d = Decimal
    assert history(scratch, 10) == []
    assert history(scratch, 11) == [("PURCHASE", s, d("31.25"), sim, None)]
    assert history(scratch, 12) == [("PURCHASE", f, d("31.25"), sim, "CARD_DECLINED")]
    assert history(scratch, 13) == [("PURCHASE", p, d("31.25"), sim, None)]
    assert history(scratch, 14) == [("PURCHASE", s, d("7.00"), None, None), ("REFUND", s, d("7.00"), None, None)]
    assert history(scratch, 15) == [("AUTHORIZE", s, d("40.00"), sim, None)]
    assert history(scratch, 16) == [
        ("AUTHORIZE", s, d("40.00"), "stripe", None),
        ("CAPTURE", s, d("25.00"), "stripe", None),
        ("REFUND", s, d("15.00"), "stripe", None),
        ("REFUND", p, d("5.00"), "stripe", None),
        ("REFUND", f, d("10.00"), "stripe", "GATEWAY_ERROR"),
    ]
    assert history(scratch, 17) == [("AUTHORIZE", s, d("40.00"), sim, None), ("VOID", s, d("40.00"), sim, None)]
    assert history(scratch, 18) == [("AUTHORIZE", s, d("40.00"), sim, None), ("CAPTURE", p, d("30.00"), sim, None)]
    for voiding in (19, 20):
        assert history(scratch, voiding) == [
            ("AUTHORIZE", s, d("40.00"), sim, None),
            ("VOID", p, d("40.00"), sim, None),
        ]
    assert history(scratch, 21) == [("AUTHORIZE", p, d("40.00"), sim, None)]
    assert history(scratch, 22) == [("AUTHORIZE", f, d("40.00"), sim, "INSUFFICIENT_FUNDS")]
    assert [(t["currency"], t["amount"]) for t in transactions_of(scratch, 23)] == [("JPY", d("1520.00"))]
    assert ledger_problems(scratch) == []
