"""The committed seed file is exactly what the generator makes, and it is realistic and loadable."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from database.seed import EXTENDED_HEADER, parse_csv
from models.payment import PAYMENT_METHODS
from models.states import LOADABLE

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "rhfd_payments.csv"


def test_the_committed_file_is_reproduced_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "again.csv"

    subprocess.run(
        [sys.executable, "scripts/generate_seed_csv.py", str(out)], cwd=ROOT, check=True, capture_output=True
    )

    assert out.read_bytes() == SEED.read_bytes()


def test_the_seed_has_the_reference_header_plus_amount_refunded_and_a_few_hundred_rows() -> None:
    rows = list(csv.reader(io.StringIO(SEED.read_text())))

    assert rows[0] == EXTENDED_HEADER
    assert 200 <= len(rows) - 1 <= 1000


def test_the_seed_covers_every_method_and_status_and_parses_cleanly() -> None:
    rows = parse_csv(SEED, "INR")

    assert {row["method"] for row in rows} == set(PAYMENT_METHODS)
    assert {row["status"] for row in rows} == set(LOADABLE)
    assert all(Decimal("3.00") <= row["amount"] < Decimal("500") for row in rows)
    assert all(row["method"] != "CASH" or row["status"] in ("SUCCESS", "REFUNDED") for row in rows)


def test_the_seed_says_how_much_of_each_refunded_payment_was_given_back() -> None:
    rows = parse_csv(SEED, "INR")

    partial = [row for row in rows if row["status"] == "PARTIALLY_REFUNDED"]
    assert partial
    assert all(
        row["amount"] * Decimal("0.1") <= row["amount_refunded"] <= row["amount"] * Decimal("0.9") for row in partial
    )
    assert all(row["amount_refunded"] == row["amount"] for row in rows if row["status"] == "REFUNDED")
    assert all(row["amount_refunded"] == 0 for row in rows if "REFUNDED" not in row["status"])
