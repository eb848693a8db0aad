"""The hold benchmark: authorize and capture per second next to the charge's, in one run.

    make bench-holds                          # 10 s per scenario, 16 connections, gunicorn -w 2
    make bench-holds BENCH_ARGS="--duration 5"

It creates a throwaway database on the configured server (DB_* / DATABASE_URL, or the embedded
one `make bench-holds` starts), starts a trip service (the fuzzer's fake: completed trips, except
that a trip id divisible by 3 is ACCEPTED at its first look and COMPLETED after it) and gunicorn
with gunicorn.conf.py and the simulator approving everything, and drives it from wrk on loopback.
The charge and the authorization run in alternating slices (so they suffer the same noise);
captures then take, once each, holds an unmeasured authorization run made just before each
slice. Every request of all three looks the trip up over HTTP, so the comparison is like for
like. Prints one table and writes it as JSON (--json, default .ci/artifacts/bench-holds.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402 - after the repo root is on sys.path
from psycopg2 import sql  # noqa: E402

# bench/bench.py, found next to this script (bench/ is not a package).
from bench import (  # noqa: E402
    Result,
    Scenario,
    create_database,
    database_dsn,
    interleaved,
    machine,
    run_wrk,
    start_server,
)
from config import Config  # noqa: E402

HOLD_IDS = "SELECT payment_id FROM payments WHERE status = 'AUTHORIZED' ORDER BY payment_id"
RELEASE_LEFTOVER_HOLDS = """
WITH sent AS (
    UPDATE payments SET status = 'PENDING', hold_action = 'void' WHERE status = 'AUTHORIZED' RETURNING payment_id
)
SELECT count(*) FROM sent;
UPDATE payments SET status = 'VOIDED', hold_action = NULL WHERE status = 'PENDING' AND hold_action = 'void'
"""
COUNT_PENDING = "SELECT count(*) FROM payments WHERE status = 'PENDING'"
BY_STATUS = "SELECT status, count(*) FROM payments GROUP BY status ORDER BY status"


def start_trip_service(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The fuzzer's fake trip service (tests/fakes.py), on a free port; its URL."""
    url_file = log.with_suffix(".url")
    url_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes"], cwd=ROOT, stdout=url_file.open("wb"), stderr=log.open("wb")
    )
    for _ in range(100):
        text = url_file.read_text().strip() if url_file.exists() else ""
        if text:
            return process, text
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the trip service did not start; see {log}")


def query(dsn: str, statement: str) -> list[tuple]:
    """Run one statement in its own connection and transaction; the rows it returns, if any."""
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def pooled(name: str, parts: list[Result]) -> Result:
    """One figure from a scenario's slices: total rate, median percentiles, all errors."""
    requests = sum(r.requests for r in parts)
    seconds = sum(r.requests / r.rps for r in parts if r.rps)
    return Result(name, requests, requests / seconds, median([r.p50_ms for r in parts]),
                  median([r.p99_ms for r in parts]), sum(r.errors for r in parts))  # fmt: skip


def main(argv: list[str]) -> int:
    """Run the three scenarios and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario (in 5 interleaved slices)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("GUNICORN_WORKERS", "2")))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", "4")))
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--json", default=str(ROOT / ".ci" / "artifacts" / "bench-holds.json"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    base = Config.from_env()
    name = f"payments_bench_holds_{os.getpid()}"
    admin = psycopg2.connect(database_dsn(base, "postgres"))
    admin.autocommit = True
    rounds, slice_seconds, c = 5, max(1, args.duration // 5), args.connections
    logs = Path(tempfile.gettempdir())
    trips, server = None, None
    try:
        dsn = create_database(admin, base, name)
        trips, trips_url = start_trip_service(logs / "bench-holds-trips.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
        env.update(
            DATABASE_URL=dsn, DEBUG="true", RATE_LIMIT_ENABLED="false", LOG_LEVEL=os.environ.get("LOG_LEVEL", "INFO"),
            TRIP_SERVICE_URL=trips_url, NOTIFICATION_SERVICE_URL="http://127.0.0.1:9",
            NOTIFY_DISPATCHER_ENABLED="false", GATEWAY_SUCCESS_RATE="1.0",
        )  # fmt: skip
        server = start_server(env, args.port, args.workers, args.threads, logs / "bench-holds-gunicorn.log")
        url = server.url
        charge, authorize = interleaved([
            Scenario("POST /v1/payments/charge", f"{url}/", "charge_completed.lua"),
            Scenario("POST /v1/payments/authorize", f"{url}/", "authorize.lua"),
        ], rounds, slice_seconds, c)  # fmt: skip
        captures: list[Result] = []
        for _ in range(rounds):
            # Leftover holds are released (directly: they are not what is measured), so only new ones are taken;
            # through PENDING, as a void goes (the database refuses AUTHORIZED -> VOIDED).
            query(dsn, RELEASE_LEFTOVER_HOLDS)
            # Holds for the slice to capture, made unmeasured: three times what the slice needs.
            run_wrk("holds to capture", f"{url}/", 3 * slice_seconds, c, "authorize.lua")
            ids = logs / "bench-holds-ids.txt"
            ids.write_text("".join(f"{payment_id}\n" for (payment_id,) in query(dsn, HOLD_IDS)))
            captures.append(run_wrk("capture", f"{url}/", slice_seconds, c, "capture.lua", (str(ids),)))
        capture = pooled("POST /v1/payments/<id>/capture", captures)
        # Requests wrk gave up on at the end of the last slice are still being answered: let them land.
        deadline = time.monotonic() + 10
        while (
            query(dsn, "SELECT count(*) FROM payments WHERE status = 'PENDING'")[0][0] and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        statuses = dict(query(dsn, BY_STATUS))
    finally:
        if server is not None:
            server.stop()
        if trips is not None:
            trips.kill()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()

    results = [charge, authorize, capture]
    print(f"\n{machine()}; gunicorn -w {args.workers} --threads {args.threads}, wrk -t2 -c{c}, "
          f"{args.duration} s per scenario in {rounds} slices\n")  # fmt: skip
    print("| scenario | req/s | p50 ms | p99 ms | errors | req/s / charge |")
    print("|---|---|---|---|---|---|")
    for result in results:
        print(f"| {result.name} | {result.rps:.0f} | {result.p50_ms:.1f} | {result.p99_ms:.1f} | {result.errors} "
              f"| {result.rps / charge.rps:.2f} |")  # fmt: skip
    print(f"\npayments by status at the end: {statuses}")
    data = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: getattr(args, k) for k in ("duration", "connections", "workers", "threads")},
        "results": [asdict(r) for r in results],
        "statuses": statuses,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
