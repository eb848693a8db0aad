"""payment_stats: the trigger keeps the aggregates equal to a full scan through every kind of write."""

from __future__ import annotations

import random
import tempfile
from decimal import Decimal
from pathlib import Path

import psycopg2

from config import Config
from database.migrate import apply_migrations, discover
from tests.helpers import config_for_database, create_database, drop_database

FROM_STATS = """
SELECT status, method, sum(payment_count)::bigint, sum(amount_sum), sum(refunded_sum)
FROM payment_stats GROUP BY 1, 2 HAVING sum(payment_count) <> 0 OR sum(amount_sum) <> 0 ORDER BY 1, 2
"""
FROM_SCAN = """
SELECT status, method, count(*)::bigint, sum(amount), sum(amount_refunded)
FROM payments GROUP BY 1, 2 ORDER BY 1, 2
"""


def both(cur: psycopg2.extensions.cursor) -> tuple[list, list]:
    cur.execute(FROM_STATS)
    stats = cur.fetchall()
    cur.execute(FROM_SCAN)
    return stats, cur.fetchall()


def test_stats_follow_inserts_updates_refunds_deletes_and_truncate(db: psycopg2.extensions.connection) -> None:
    rng = random.Random(7)
    with db.cursor() as cur:
        for n in range(300):
            cur.execute(
                "INSERT INTO payments (trip_id, amount, method, status, reference) VALUES (%s, %s, %s, %s, %s)",
                (n + 1, Decimal(rng.randint(100, 9999)) / 100, rng.choice(["CARD", "UPI", "WALLET", "CASH"]),
                 rng.choice(["PENDING", "FAILED", "SUCCESS"]), f"r{n}"),
            )  # fmt: skip
        cur.execute("UPDATE payments SET status = 'SUCCESS' WHERE status = 'PENDING' AND payment_id % 2 = 0")
        cur.execute("UPDATE payments SET amount_refunded = amount / 4, status = 'PARTIALLY_REFUNDED'"
                    " WHERE status = 'SUCCESS' AND payment_id % 3 = 0")  # fmt: skip
        cur.execute("UPDATE payments SET amount_refunded = amount, status = 'REFUNDED' WHERE payment_id % 7 = 0"
                    " AND status = 'PARTIALLY_REFUNDED'")  # fmt: skip
        cur.execute("UPDATE payments SET method = 'CASH' WHERE payment_id % 11 = 0")
        cur.execute("UPDATE payments SET amount = amount + 1 WHERE payment_id % 13 = 0")
        cur.execute("DELETE FROM payments WHERE payment_id % 17 = 0")

        stats, scan = both(cur)
        assert stats == scan
        assert len(scan) > 8

        cur.execute("TRUNCATE payments CASCADE")
        assert both(cur) == ([], [])


def test_the_migration_counts_payments_that_existed_before_it(base_config: Config) -> None:
    name = create_database(base_config, "payments_stats")
    conn = psycopg2.connect(config_for_database(base_config, name).get_database_uri())
    try:
        first_only = [m for m in discover() if m.version == "0001"]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{first_only[0].name}.sql").write_text(first_only[0].sql)
            apply_migrations(conn, Path(tmp))
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO payments (trip_id, amount, amount_refunded, method, status, reference)"
                " VALUES (1, 10, 2, 'CARD', 'PARTIALLY_REFUNDED', 'a'), (2, 5, 0, 'UPI', 'SUCCESS', 'b')"
            )
        conn.commit()

        assert "0002" in apply_migrations(conn)

        with conn.cursor() as cur:
            stats, scan = both(cur)
        assert stats == scan and len(scan) == 2
    finally:
        conn.close()
        drop_database(base_config, name)


def test_the_counter_upsert_is_plpgsql_so_its_plan_is_kept(db: psycopg2.extensions.connection) -> None:
    # PostgreSQL 15 re-plans a SQL-language function's INSERT on every call: up to three per charge.
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.proname = %s",
            ("payment_stats_add",),
        )
        assert cur.fetchall() == [("plpgsql",)]
