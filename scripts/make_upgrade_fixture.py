"""Regenerate the upgrade test's fixture: a database of the current release, made through its own API.

Usage (DB_* or DATABASE_URL as for the tests: a server where scratch databases may be created):

    python scripts/make_upgrade_fixture.py [--release-dir DIR]

The current release is commit 2b44cd8 (before issue 30 gave payments their transactions). This writes
tests/database/fixtures/release_2b44cd8.sql, a pg_dump of that release's database (schema, data and
schema_migrations, as INSERT statements of up to 100 rows, without owners or privileges), and release_2b44cd8.json, each
request made (method, path, headers, exact body, idempotency key) with the exact answer (status and
body). tests/database/test_upgrade.py restores the dump, migrates it with the current code and replays
the requests against the current app.

How: the release is checked out in a temporary git worktree (or DIR, a checkout of it, is used) and
this script runs itself again in a child process whose imports resolve to that checkout. The child
creates nothing but the rows: on a scratch database it runs the release's migrations and its seed
loader with its rhfd_payments.csv, then makes requests through the release's create_app test client,
with its own tests' fakes (trip, notification and rider/driver services on loopback) and the simulator
gateway: a card charge, a CASH charge, a refused charge, one left PENDING (GATEWAY_PENDING_RATE=1), a
hold left AUTHORIZED, one captured and partly refunded, one voided, one whose capture got no answer
(a gateway that raises GatewayUnavailableError: left PENDING), a partial and a full refund, a refund
left PENDING, one the gateway refused (502, FAILED), and two receipts. Background loops are off, so
what is PENDING stays so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RELEASE = "2b44cd8"
FIXTURES = ROOT / "tests" / "database" / "fixtures"
DUMP = FIXTURES / f"release_{RELEASE}.sql"
RECORD = FIXTURES / f"release_{RELEASE}.json"
RIDER, DRIVER = 7, 9


def main(argv: list[str] | None = None) -> int:
    """Check out the release, run the child on a scratch database, dump it; or be the child (--record)."""
    parser = argparse.ArgumentParser(description="Regenerate the database fixture of the upgrade test.")
    parser.add_argument("--release-dir", type=Path, help=f"a checkout of {RELEASE} (default: a temporary worktree)")
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)  # the child: write the requests here
    args = parser.parse_args(argv)
    if args.record:
        record(args.release_dir, args.record)
        return 0
    if args.release_dir:
        generate(args.release_dir.resolve())
        return 0
    with tempfile.TemporaryDirectory(prefix="payment-release-") as parent:
        checkout = Path(parent) / RELEASE
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), RELEASE], check=True)
        try:
            generate(checkout)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=True)
    return 0


def generate(release_dir: Path) -> None:
    """Make the release's database on a scratch database, then write the dump and the record."""
    sys.path.insert(0, str(ROOT))
    from config import Config
    from tests.helpers import config_for_database, create_database, drop_database

    base = Config.from_env()
    name = create_database(base, "payments_release")
    config = config_for_database(base, name)
    try:
        # The child sees this database only through DATABASE_URL, whatever DB_* say.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
        env.update(DATABASE_URL=config.get_database_uri(), PYTHONPATH=str(release_dir), PYTHONDONTWRITEBYTECODE="1")
        FIXTURES.mkdir(parents=True, exist_ok=True)
        child = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--release-dir",
            str(release_dir),
            "--record",
            str(RECORD),
        ]
        subprocess.run(child, cwd=release_dir, env=env, check=True)
        dump = subprocess.run(
            [
                "pg_dump",
                "--no-owner",
                "--no-privileges",
                "--column-inserts",
                "--rows-per-insert=100",
                "--dbname",
                config.get_database_uri(),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # pg_dump's psql meta-commands (\restrict, from 17.6/16.10/15.14) are not SQL: the test runs plain SQL.
        lines = [line for line in dump.splitlines() if not line.startswith("\\")]
        header = f"-- The database of release {RELEASE}: made by scripts/make_upgrade_fixture.py; do not edit.\n"
        DUMP.write_text(header + "\n".join(lines) + "\n")
    finally:
        drop_database(base, name)
    print(f"wrote {DUMP.relative_to(ROOT)} and {RECORD.relative_to(ROOT)}")


def record(release_dir: Path, out: Path) -> None:
    """The child: with the release's own code, make its database and record every request and answer."""
    sys.path.insert(0, str(release_dir))
    import psycopg2
    from flask.testing import FlaskClient

    from app import close_app, create_app
    from config import Config
    from database.migrate import apply_migrations
    from database.seed import load_csv
    from database_setup import DEFAULT_CSV
    from services.gateways import FAILED, GatewayResult, GatewayUnavailableError
    from tests.fakes import fake_notification_service, fake_profile_service, fake_trip_service

    config = Config.from_env().with_overrides({"TESTING": True, "LOG_LEVEL": "ERROR", "DEBUG": False})
    conn = psycopg2.connect(config.get_database_uri(), options="-c timezone=UTC")
    try:
        apply_migrations(conn)
        load_csv(conn, DEFAULT_CSV, "INR")
    finally:
        conn.close()

    requests: list[dict[str, Any]] = []

    def send(client: FlaskClient, name: str, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """Make one request and record it with its exact answer; return the answer's JSON."""
        headers = {"Idempotency-Key": key} if key else {}
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        response = client.open(
            path, method=method, data=data, headers=headers, content_type="application/json" if data else None
        )
        idempotency_key = key or (body or {}).get("idempotency_key")
        requests.append(
            {
                "name": name,
                "method": method,
                "path": path,
                "headers": headers,
                "body": data,
                "idempotency_key": idempotency_key,
                # What the release stores for a replay: final answers to keyed requests (contract section 4).
                "replayable": idempotency_key is not None and response.status_code in (200, 201, 202),
                "status": response.status_code,
                "response": response.get_data(as_text=True),
            }
        )
        return response.get_json()

    with fake_trip_service() as trips, fake_notification_service() as notifications, fake_profile_service() as people:
        people.riders[RIDER] = {"rider_id": RIDER, "name": "Asha Rao"}
        people.drivers[DRIVER] = {"driver_id": DRIVER, "name": "Vikram Singh", "vehicle": "KA-01-AB-1234"}
        neighbours = {
            "TRIP_SERVICE_URL": trips.url,
            "NOTIFICATION_SERVICE_URL": notifications.url,
            "RIDER_SERVICE_URL": people.url,
            "DRIVER_SERVICE_URL": people.url,
            "GATEWAY": "simulator",
            "RECONCILE_INTERVAL": 0,
            "HOUSEKEEPING_INTERVAL": 0,
            "NOTIFY_DISPATCHER_ENABLED": False,
            "RATE_LIMIT_ENABLED": False,
        }
        approving = create_app({**neighbours, "GATEWAY_SUCCESS_RATE": 1.0}, config=config)
        refusing = create_app({**neighbours, "GATEWAY_SUCCESS_RATE": 0.0}, config=config)
        undecided = create_app({**neighbours, "GATEWAY_SUCCESS_RATE": 1.0, "GATEWAY_PENDING_RATE": 1.0}, config=config)
        try:
            ok, no, wait = approving.test_client(), refusing.test_client(), undecided.test_client()
            gateway = approving.extensions["payment_services"].gateway
            party = {"rider_id": RIDER, "driver_id": DRIVER}
            for trip_id in (90001, 90002, 90003, 90004, 90009, 90010):
                trips.trip(trip_id, "COMPLETED", 10.5, **party)
            for trip_id in (90005, 90006, 90007, 90008):
                trips.trip(trip_id, "ACCEPTED", 12.0, **party)

            card = send(
                ok,
                "card_charge",
                "POST",
                "/v1/payments/charge",
                {"idempotency_key": "upgrade-card", "trip_id": 90001, "method": "CARD", **party},
            )
            cash = send(
                ok,
                "cash_charge",
                "POST",
                "/v1/payments/charge",
                {"trip_id": 90002, "method": "cash"},
                key="upgrade-cash",
            )
            send(
                no,
                "refused_charge",
                "POST",
                "/v1/payments/charge",
                {"idempotency_key": "upgrade-refused", "trip_id": 90003, "method": "UPI", **party},
            )
            send(
                wait,
                "pending_charge",
                "POST",
                "/v1/payments/charge",
                {"idempotency_key": "upgrade-pending", "trip_id": 90004, "method": "WALLET", **party},
            )
            send(
                ok,
                "held",
                "POST",
                "/v1/payments/authorize",
                {"idempotency_key": "upgrade-held", "trip_id": 90005, "method": "CARD", **party},
            )
            captured = send(
                ok,
                "captured_hold",
                "POST",
                "/v1/payments/authorize",
                {"idempotency_key": "upgrade-captured", "trip_id": 90006, "method": "CARD", **party},
            )
            voided = send(
                ok,
                "voided_hold",
                "POST",
                "/v1/payments/authorize",
                {"idempotency_key": "upgrade-voided", "trip_id": 90007, "method": "CARD", **party},
            )
            capturing = send(
                ok,
                "capturing_hold",
                "POST",
                "/v1/payments/authorize",
                {"idempotency_key": "upgrade-capturing", "trip_id": 90008, "method": "CARD", **party},
            )
            for trip_id in (90006, 90008):
                trips.trip(trip_id, "COMPLETED", 8.0, **party)
            send(ok, "capture", "POST", f"/v1/payments/{captured['payment_id']}/capture", {}, key="upgrade-capture")
            send(ok, "void", "POST", f"/v1/payments/{voided['payment_id']}/void", {"idempotency_key": "upgrade-void"})

            def no_answer(*args: Any) -> Any:
                raise GatewayUnavailableError("the capture's answer was lost (made by make_upgrade_fixture.py)")

            gateway.capture = no_answer
            send(
                ok,
                "capture_unanswered",
                "POST",
                f"/v1/payments/{capturing['payment_id']}/capture",
                {"idempotency_key": "upgrade-capture-unanswered"},
            )
            del gateway.capture

            send(
                ok,
                "partial_refund",
                "POST",
                f"/v1/payments/{card['payment_id']}/refund",
                {"amount": 10.5, "reason": "driver took a detour", "idempotency_key": "upgrade-refund-partial"},
            )
            send(ok, "full_refund", "POST", f"/v1/payments/{cash['payment_id']}/refund", {}, key="upgrade-refund-full")
            send(
                ok,
                "captured_partial_refund",
                "POST",
                f"/v1/payments/{captured['payment_id']}/refund",
                {"amount": 5, "idempotency_key": "upgrade-refund-captured"},
            )
            refunding = send(
                ok,
                "refund_pending_charge",
                "POST",
                "/v1/payments/charge",
                {"idempotency_key": "upgrade-refund-pending-charge", "trip_id": 90009, "method": "CARD"},
            )
            send(
                wait,
                "pending_refund",
                "POST",
                f"/v1/payments/{refunding['payment_id']}/refund",
                {"amount": 4.25, "idempotency_key": "upgrade-refund-pending"},
            )
            refused = send(
                ok,
                "refund_refused_charge",
                "POST",
                "/v1/payments/charge",
                {"idempotency_key": "upgrade-refund-refused-charge", "trip_id": 90010, "method": "CARD"},
            )
            gateway.refund = lambda refund: GatewayResult(FAILED, "GATEWAY_ERROR")
            send(
                ok,
                "refused_refund",
                "POST",
                f"/v1/payments/{refused['payment_id']}/refund",
                {"amount": 3, "idempotency_key": "upgrade-refund-refused"},
            )
            del gateway.refund
            send(ok, "card_receipt", "GET", f"/v1/payments/{card['payment_id']}/receipt")
            send(ok, "captured_receipt", "GET", f"/v1/payments/{captured['payment_id']}/receipt")
        finally:
            for application in (approving, refusing, undecided):
                close_app(application)  # fmt: skip

    conn = psycopg2.connect(config.get_database_uri(), options="-c timezone=UTC")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            dumped_at = cur.fetchone()[0]
    finally:
        conn.close()
    document = {"release": RELEASE, "dumped_at": dumped_at.isoformat(), "requests": requests}
    out.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
