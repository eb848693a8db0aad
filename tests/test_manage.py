"""Operator commands run as operators run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2

from config import Config
from tests.helpers import closed_port, database_env

ROOT = Path(__file__).resolve().parent.parent


def run_manage(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=database_env(config), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


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
