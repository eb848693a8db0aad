"""Prepared statements: PREPARE once per connection, then EXECUTE, with the answers of plain SQL."""

from __future__ import annotations

import contextlib

import psycopg2
import pytest

from config import Config
from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from services import idempotency_service, notification_service, payment_queries, receipt_service
from services.payments import attempts, charge, holds, refunds, repository

DOUBLE = Prepared("SELECT %(n)s::int * 2 AS doubled, %(n)s::int + %(m)s::int AS total, '100%%' AS pct")


def _prepared_names(cur: Cursor) -> set[str]:
    cur.execute("SELECT name FROM pg_prepared_statements")
    return {row["name"] for row in cur.fetchall()}


def test_a_prepared_statement_numbers_each_parameter_once_and_unescapes_percent() -> None:
    assert DOUBLE.prepare.endswith("AS SELECT $1::int * 2 AS doubled, $1::int + $2::int AS total, '100%' AS pct")
    assert DOUBLE.execute == f"EXECUTE {DOUBLE.name}(%(n)s, %(m)s)"
    assert Prepared("SELECT 1").execute == f"EXECUTE {Prepared('SELECT 1').name}"


def test_a_prepared_statement_is_prepared_once_per_connection_and_answers_like_plain_sql(pool: ConnectionPool) -> None:
    for n in (3, 4):
        with pool.cursor() as cur:
            cur.execute(DOUBLE, {"n": n, "m": 1})
            assert cur.fetchone() == {"doubled": 2 * n, "total": n + 1, "pct": "100%"}
            assert DOUBLE.name in _prepared_names(cur)
            assert cur.connection.prepared == {DOUBLE.name}


def test_a_statement_prepared_in_a_rolled_back_transaction_stays_usable(pool: ConnectionPool) -> None:
    with pytest.raises(psycopg2.errors.DivisionByZero), pool.cursor() as cur:
        cur.execute(DOUBLE, {"n": 1, "m": 1})
        cur.execute("SELECT 1 / 0")
    with pool.cursor() as cur:
        cur.execute(DOUBLE, {"n": 5, "m": 1})
        assert cur.fetchone()["doubled"] == 10


def test_a_prepare_that_failed_in_an_aborted_transaction_is_prepared_again_later(pool: ConnectionPool) -> None:
    with pytest.raises(psycopg2.errors.InFailedSqlTransaction), pool.cursor() as cur:
        with contextlib.suppress(psycopg2.errors.DivisionByZero):
            cur.execute("SELECT 1 / 0")
        cur.execute(DOUBLE, {"n": 1, "m": 1})
    with pool.cursor() as cur:
        assert DOUBLE.name not in cur.connection.prepared
        cur.execute(DOUBLE, {"n": 6, "m": 1})
        assert cur.fetchone()["doubled"] == 12


def test_with_prepared_statements_off_the_same_sql_runs_unprepared(test_config: Config, db: object) -> None:
    plain = ConnectionPool(test_config.get_database_uri(), 1, 0.5, 2, prepare_statements=False)
    try:
        with plain.cursor() as cur:
            cur.execute(DOUBLE, {"n": 7, "m": 1})
            assert cur.fetchone()["doubled"] == 14
            assert _prepared_names(cur) == set()
    finally:
        plain.close()


def _service_statements() -> list[Prepared]:
    modules = (attempts, charge, holds, refunds, repository, idempotency_service, notification_service, payment_queries,
               receipt_service)  # fmt: skip
    found = {id(v): v for m in modules for v in vars(m).values() if isinstance(v, Prepared)}
    return list(found.values())


def test_every_prepared_service_statement_prepares_against_the_schema(pool: ConnectionPool) -> None:
    # PostgreSQL infers each parameter's type when preparing: a parameter it cannot type would
    # otherwise surface as an error on the first request that runs the statement.
    statements = _service_statements()
    assert len(statements) >= 20
    with pool.cursor() as cur:
        for statement in statements:
            cur.execute(statement.prepare)
        assert {s.name for s in statements} <= _prepared_names(cur)
