"""CSV loading: the whole file or nothing, no duplicates on re-run, ids continue after the load."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from config import Config
from database.seed import EXPECTED_HEADER, SeedError, load_csv, parse_csv

HEADER = ",".join(EXPECTED_HEADER)
GOOD_ROWS = [
    "1,101,31.25,CARD,SUCCESS,PAY-1,2025-10-01 06:47:34",
    "2,102,7.00,cash,SUCCESS,PAY-2,2025-10-01 07:00:00",
    "3,103,12.50,UPI,FAILED,PAY-3,2025-10-01 08:00:00",
    "4,103,12.50,UPI,SUCCESS,PAY-4,2025-10-01 08:05:00",
    "5,104,40.00,WALLET,REFUNDED,PAY-5,2025-10-02 09:00:00",
]


@pytest.fixture
def conn(test_config: Config, db: psycopg2.extensions.connection) -> Iterator[psycopg2.extensions.connection]:
    """A transactional connection to the clean test database."""
    connection = psycopg2.connect(test_config.get_database_uri(), options="-c timezone=UTC")
    yield connection
    connection.close()


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "payments.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def count(db: psycopg2.extensions.connection) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        return cur.fetchone()[0]


def test_a_good_file_loads_every_row_with_exact_values(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    result = load_csv(conn, write_csv(tmp_path, GOOD_ROWS), "INR")

    assert (result.rows_in_file, result.inserted) == (5, 5)
    with db.cursor() as cur:
        cur.execute(
            "SELECT amount, amount_refunded, method, currency, created_at::text FROM payments WHERE payment_id = 5"
        )
        assert cur.fetchone() == (Decimal("40.00"), Decimal("40.00"), "WALLET", "INR", "2025-10-02 09:00:00+00")
        cur.execute("SELECT method FROM payments WHERE payment_id = 2")
        assert cur.fetchone()[0] == "CASH"


def test_loading_the_same_file_twice_adds_nothing(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, GOOD_ROWS)
    load_csv(conn, path, "INR")

    again = load_csv(conn, path, "INR")

    assert again.inserted == 0
    assert count(db) == 5


def test_new_payments_get_ids_above_the_largest_loaded_id(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    load_csv(conn, write_csv(tmp_path, ["900,1,5.00,CASH,SUCCESS,PAY-900,2025-10-01 06:00:00"]), "INR")

    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference)"
            " VALUES (2, 5, 'CASH', 'SUCCESS', 'new') RETURNING payment_id"
        )
        assert cur.fetchone()[0] == 901


def test_loading_never_moves_the_id_sequence_backwards(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    with db.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('payments', 'payment_id'), 5000)")
    load_csv(conn, write_csv(tmp_path, GOOD_ROWS), "INR")

    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference)"
            " VALUES (2, 5, 'CASH', 'SUCCESS', 'new') RETURNING payment_id"
        )
        assert cur.fetchone()[0] == 5001


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("6,105,abc,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount"),
        ("6,105,1.005,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount"),
        ("6,105,-1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount"),
        ("6,105,NaN,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount"),
        ("6,105,1.00,CHEQUE,SUCCESS,PAY-6,2025-10-03 10:00:00", "method"),
        ("6,105,1.00,CARD,PAID,PAY-6,2025-10-03 10:00:00", "status"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6,03/10/2025", "created_at"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6,2025-13-03 10:00:00", "created_at"),
        ("x,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "payment_id"),
        ("6,0,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "trip_id"),
        ("6,105,1.00,CARD,SUCCESS,,2025-10-03 10:00:00", "reference"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6", "expected 7 fields"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00,extra", "expected 7 fields"),
        ("1,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "payment_id 1 already appears on line 2"),
        ("6,105,1.00,CARD,SUCCESS,PAY-1,2025-10-03 10:00:00", "reference PAY-1 already appears"),
        ("6,101,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "trip 101 already has a non-failed payment"),
    ],
)
def test_a_malformed_line_is_named_and_nothing_is_loaded(
    conn: psycopg2.extensions.connection,
    db: psycopg2.extensions.connection,
    tmp_path: Path,
    bad_row: str,
    message: str,
) -> None:
    path = write_csv(tmp_path, [*GOOD_ROWS, bad_row])

    with pytest.raises(SeedError) as caught:
        load_csv(conn, path, "INR")

    assert "line 7" in str(caught.value)
    assert message in str(caught.value)
    assert count(db) == 0


def test_a_wrong_header_is_rejected(tmp_path: Path) -> None:
    path = write_csv(tmp_path, GOOD_ROWS, header="id,trip,amount,method,status,reference,created")

    with pytest.raises(SeedError, match="line 1: header"):
        parse_csv(path, "INR")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage"])
def test_an_empty_or_binary_file_is_rejected(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    with pytest.raises(SeedError):
        parse_csv(path, "INR")


def test_a_missing_file_is_a_seed_error(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="cannot read"):
        parse_csv(tmp_path / "absent.csv", "INR")


def test_rows_conflicting_with_stored_payments_abort_the_whole_load(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    load_csv(conn, write_csv(tmp_path, GOOD_ROWS[:1]), "INR")
    clash = "77,999,5.00,CARD,SUCCESS,PAY-1,2025-10-03 10:00:00"  # new id, but PAY-1 is taken

    with pytest.raises(SeedError, match="conflicts with payments already stored"):
        load_csv(conn, write_csv(tmp_path, [*GOOD_ROWS[1:], clash]), "INR")

    assert count(db) == 1
