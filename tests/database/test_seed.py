"""CSV loading: the whole file or nothing, no duplicates on re-run, ids continue after the load."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from config import Config
from database.seed import EXPECTED_HEADER, EXTENDED_HEADER, MAX_LOADED_PAYMENT_ID, SeedError, load_csv, parse_csv
from database_setup import DEFAULT_CSV

HEADER = ",".join(EXPECTED_HEADER)
EXTENDED = ",".join(EXTENDED_HEADER)
REFERENCE_CSV = Path("/work/shared/seed/reference_rhfd_payments.csv")
GOOD_ROWS = [
    "1,101,31.25,CARD,SUCCESS,PAY-1,2025-10-01 06:47:34",
    "2,102,7.00,cash,SUCCESS,PAY-2,2025-10-01 07:00:00",
    "3,103,12.50,UPI,FAILED,PAY-3,2025-10-01 08:00:00",
    "4,103,12.50,UPI,SUCCESS,PAY-4,2025-10-01 08:05:00",
    "5,104,40.00,WALLET,REFUNDED,PAY-5,2025-10-02 09:00:00",
]
# Payments breaking the ledger invariant: amount_refunded is the sum of the refund records, never above amount.
LEDGER_VIOLATIONS = """
SELECT p.payment_id, p.amount, p.amount_refunded, COALESCE(r.total, 0) AS recorded
FROM payments AS p
LEFT JOIN (SELECT payment_id, sum(refund_amount) AS total FROM payment_refunds GROUP BY payment_id) AS r
       ON r.payment_id = p.payment_id
WHERE p.amount_refunded <> COALESCE(r.total, 0) OR p.amount_refunded > p.amount
ORDER BY p.payment_id
"""
REFUND_RECORDS = "SELECT payment_id, refund_amount, reason, created_at FROM payment_refunds ORDER BY payment_id"
# What the old loader stored for the file's refunded rows: the refunded part of a REFUNDED row without its
# record, and a PARTIALLY_REFUNDED row at amount_refunded 0.
OLD_LOADER_ROWS = """
INSERT INTO payments (payment_id, trip_id, amount, amount_refunded, method, status, reference, created_at, updated_at)
VALUES (5, 104, 40.00, 40.00, 'WALLET', 'REFUNDED', 'PAY-5', '2025-10-02 09:00:00+00', '2025-10-02 09:00:00+00'),
       (6, 105, 50.00, 0, 'CARD', 'PARTIALLY_REFUNDED', 'PAY-6', '2025-10-03 10:00:00+00', '2025-10-03 10:00:00+00'),
       (7, 900, 20.00, 0, 'UPI', 'PARTIALLY_REFUNDED', 'OTHER-7', '2025-10-04 10:00:00+00', '2025-10-04 10:00:00+00')
"""


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


def count(db: psycopg2.extensions.connection, table: str = "payments") -> int:
    with db.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return cur.fetchone()[0]


def ledger_violations(db: psycopg2.extensions.connection) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(LEDGER_VIOLATIONS)
        return cur.fetchall()


def refund_records(db: psycopg2.extensions.connection) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(REFUND_RECORDS)
        return cur.fetchall()


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
        ("6,105,0.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount must be greater than 0"),
        ("6,105,9.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00", "PARTIALLY_REFUNDED payment needs its"),
        ("6,105,NaN,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount"),
        ("6,105,1e2,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount must be a decimal number such as 31.25"),
        ("6,105,+5.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "amount must be a decimal number such as 31.25"),
        ("6,105,1.00,CHEQUE,SUCCESS,PAY-6,2025-10-03 10:00:00", "method"),
        ("6,105,1.00,CARD,PAID,PAY-6,2025-10-03 10:00:00", "status"),
        # A hold needs a gateway that holds it; a loaded row has none.
        ("6,105,1.00,CARD,AUTHORIZED,PAY-6,2025-10-03 10:00:00", "status must be one of SUCCESS, PENDING, FAILED"),
        ("6,105,1.00,CARD,VOIDED,PAY-6,2025-10-03 10:00:00", "status must be one of SUCCESS, PENDING, FAILED"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6,03/10/2025", "created_at"),
        ("6,105,1.00,CARD,SUCCESS,PAY-6,2025-13-03 10:00:00", "created_at"),
        ("6,105,40.00,UPI,PENDING,PAY-6,2030-01-01 00:00:00", "created_at 2030-01-01 00:00:00 (UTC) is in the future"),
        ("x,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "payment_id"),
        # The id sequence continues after the largest loaded id: one at the top of BIGINT leaves no room.
        ("9223372036854775807,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "is above 1,000,000,000,000,000"),
        ("1000000000000001,105,1.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00", "leaves them too little room"),
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


def test_a_file_loaded_in_a_zero_decimal_currency_refuses_amounts_with_decimals_naming_the_line(
    tmp_path: Path,
) -> None:
    yen = ["1,101,2429,CARD,SUCCESS,PAY-1,2025-10-01 06:47:34", "2,102,7.00,CASH,SUCCESS,PAY-2,2025-10-01 07:00:00"]

    with pytest.raises(SeedError, match=r"line 4: amount 12.50 has more decimals than JPY has \(0\)"):
        parse_csv(write_csv(tmp_path, [*yen, "3,103,12.50,UPI,SUCCESS,PAY-3,2025-10-01 08:00:00"]), "JPY")
    assert [row["amount"] for row in parse_csv(write_csv(tmp_path, yen), "JPY")] == [Decimal(2429), Decimal(7)]


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


def test_the_largest_loadable_id_loads_and_new_payments_continue_after_it(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    load_csv(
        conn, write_csv(tmp_path, [f"{MAX_LOADED_PAYMENT_ID},1,5.00,CASH,SUCCESS,PAY-X,2025-10-01 06:00:00"]), "INR"
    )

    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO payments (trip_id, amount, method, status, reference)"
            " VALUES (2, 5, 'CASH', 'SUCCESS', 'new') RETURNING payment_id"
        )
        assert cur.fetchone()[0] == MAX_LOADED_PAYMENT_ID + 1


def test_a_file_with_a_utf8_byte_order_mark_loads(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    path = tmp_path / "exported.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join([HEADER, *GOOD_ROWS]).encode() + b"\n")

    result = load_csv(conn, path, "INR")

    assert (result.rows_in_file, result.inserted) == (len(GOOD_ROWS), len(GOOD_ROWS))


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


def test_a_refunded_row_gets_one_imported_refund_record_dated_like_the_payment(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    load_csv(conn, write_csv(tmp_path, GOOD_ROWS), "INR")

    assert refund_records(db) == [(5, Decimal("40.00"), "imported", datetime(2025, 10, 2, 9, tzinfo=UTC))]
    assert ledger_violations(db) == []


def test_the_shipped_seed_file_loads_with_every_refunded_amount_recorded(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection
) -> None:
    result = load_csv(conn, DEFAULT_CSV, "INR")

    assert result.inserted == result.rows_in_file
    assert ledger_violations(db) == []
    with db.cursor() as cur:
        cur.execute(
            "SELECT p.status, count(*), count(*) FILTER (WHERE r.refund_amount = p.amount),"
            "       count(*) FILTER (WHERE r.refund_amount > 0 AND r.refund_amount < p.amount)"
            " FROM payments AS p JOIN payment_refunds AS r USING (payment_id)"
            " WHERE r.reason = 'imported' GROUP BY 1 ORDER BY 1"
        )
        by_status = {status: rest for status, *rest in cur.fetchall()}
        cur.execute("SELECT status, count(*) FROM payments WHERE status LIKE '%%REFUNDED' GROUP BY 1 ORDER BY 1")
        refunded_rows = dict(cur.fetchall())
    assert by_status == {
        "PARTIALLY_REFUNDED": [refunded_rows["PARTIALLY_REFUNDED"], 0, refunded_rows["PARTIALLY_REFUNDED"]],
        "REFUNDED": [refunded_rows["REFUNDED"], refunded_rows["REFUNDED"], 0],
    }


def test_a_partially_refunded_row_with_its_amount_loads_it_and_records_it(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    rows = [f"{row},{'40.00' if 'REFUNDED' in row else '0.00'}" for row in GOOD_ROWS]
    rows.append("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,12.34")

    load_csv(conn, write_csv(tmp_path, rows, header=EXTENDED), "INR")

    with db.cursor() as cur:
        cur.execute("SELECT amount_refunded, status FROM payments WHERE payment_id = 6")
        assert cur.fetchone() == (Decimal("12.34"), "PARTIALLY_REFUNDED")
    assert [record[:3] for record in refund_records(db)] == [
        (5, Decimal("40.00"), "imported"),
        (6, Decimal("12.34"), "imported"),
    ]
    assert ledger_violations(db) == []


@pytest.mark.parametrize(
    ("header", "bad_row"),
    [
        (HEADER, "6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00"),
        (EXTENDED, "6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,"),
    ],
    ids=["reference header", "empty cell"],
)
def test_a_partially_refunded_row_without_its_amount_is_refused_naming_the_line(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path, header: str, bad_row: str
) -> None:
    rows = GOOD_ROWS if header == HEADER else [f"{row}," for row in GOOD_ROWS]

    with pytest.raises(SeedError, match="line 7: a PARTIALLY_REFUNDED payment needs its amount_refunded"):
        load_csv(conn, write_csv(tmp_path, [*rows, bad_row], header=header), "INR")

    assert (count(db), count(db, "payment_refunds")) == (0, 0)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,50.01", "needs its amount_refunded"),
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,50.00", "needs its amount_refunded"),
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,0.00", "needs its amount_refunded"),
        ("6,105,50.00,CARD,REFUNDED,PAY-6,2025-10-03 10:00:00,60.00", "must equal its amount 50.00"),
        ("6,105,50.00,CARD,REFUNDED,PAY-6,2025-10-03 10:00:00,10.00", "must equal its amount 50.00"),
        ("6,105,50.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00,5.00", "amount_refunded must be 0"),
        ("6,105,50.00,CARD,FAILED,PAY-6,2025-10-03 10:00:00,50.00", "amount_refunded must be 0"),
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,1.005", "amount_refunded"),
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,-1.00", "amount_refunded"),
        ("6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,abc", "amount_refunded"),
        ("6,105,0.00,CARD,SUCCESS,PAY-6,2025-10-03 10:00:00,0.00", "amount must be greater than 0"),
    ],
)
def test_a_refunded_amount_that_does_not_fit_the_row_is_refused_naming_the_line(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path, bad_row: str, message: str
) -> None:
    rows = [f"{row},{'40.00' if 'REFUNDED' in row else ''}" for row in GOOD_ROWS]

    with pytest.raises(SeedError) as caught:
        load_csv(conn, write_csv(tmp_path, [*rows, bad_row], header=EXTENDED), "INR")

    assert "line 7" in str(caught.value)
    assert message in str(caught.value)
    assert (count(db), count(db, "payment_refunds")) == (0, 0)


def test_loading_the_shipped_file_twice_adds_no_refund_records(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection
) -> None:
    load_csv(conn, DEFAULT_CSV, "INR")
    records = refund_records(db)

    again = load_csv(conn, DEFAULT_CSV, "INR")

    assert (again.inserted, again.repaired) == (0, 0)
    assert records and refund_records(db) == records


def test_a_database_loaded_by_the_old_loader_is_repaired_by_loading_the_new_file(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    with db.cursor() as cur:
        cur.execute(OLD_LOADER_ROWS)
        cur.execute("SELECT * FROM payments WHERE payment_id = 7")
        unrelated = cur.fetchone()
    rows = [
        "5,104,40.00,WALLET,REFUNDED,PAY-5,2025-10-02 09:00:00,40.00",
        "6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,12.34",
        # Same id as a stored payment that is not this one: left exactly as it is.
        "7,106,20.00,UPI,PARTIALLY_REFUNDED,PAY-7,2025-10-04 10:00:00,5.00",
        "8,107,9.00,CARD,SUCCESS,PAY-8,2025-10-05 10:00:00,0.00",
    ]

    result = load_csv(conn, write_csv(tmp_path, rows, header=EXTENDED), "INR")

    assert (result.inserted, result.repaired) == (1, 1)
    with db.cursor() as cur:
        cur.execute("SELECT amount_refunded, status FROM payments WHERE payment_id = 6")
        assert cur.fetchone() == (Decimal("12.34"), "PARTIALLY_REFUNDED")
        cur.execute("SELECT * FROM payments WHERE payment_id = 7")
        assert cur.fetchone() == unrelated
    assert refund_records(db) == [
        (5, Decimal("40.00"), "imported", datetime(2025, 10, 2, 9, tzinfo=UTC)),
        (6, Decimal("12.34"), "imported", datetime(2025, 10, 3, 10, tzinfo=UTC)),
    ]
    assert ledger_violations(db) == []


def test_a_repaired_database_is_left_alone_by_the_next_load(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    with db.cursor() as cur:
        cur.execute(OLD_LOADER_ROWS)
    path = write_csv(tmp_path, ["6,105,50.00,CARD,PARTIALLY_REFUNDED,PAY-6,2025-10-03 10:00:00,12.34"], EXTENDED)
    load_csv(conn, path, "INR")
    records = refund_records(db)

    again = load_csv(conn, path, "INR")

    assert (again.inserted, again.repaired) == (0, 0)
    assert refund_records(db) == records


@pytest.mark.skipif(not REFERENCE_CSV.exists(), reason="the reference's own CSV is not on this machine")
def test_the_reference_file_still_loads_unchanged(
    conn: psycopg2.extensions.connection, db: psycopg2.extensions.connection
) -> None:
    result = load_csv(conn, REFERENCE_CSV, "INR")

    assert (result.rows_in_file, result.inserted) == (350, 350)
    assert (count(db), count(db, "payment_refunds")) == (350, 0)
    assert ledger_violations(db) == []
