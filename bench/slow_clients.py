"""Slow clients: what 200 of them held open do to everyone else, through the front door and against bare gunicorn.

    make bench-slow-clients                            # 200 slow connections, 20 s per scenario
    make bench-slow-clients BENCH_ARGS="--slow 40 --duration 10"

It creates a throwaway database on the configured server (DB_* / DATABASE_URL, or the embedded one
`make bench-slow-clients` starts) and runs gunicorn with gunicorn.conf.py (2 workers x 4 threads,
as shipped). Half of the slow connections send part of a request's headers and stall; the other
half send the headers of a `POST /v1/payments/charge` with `Content-Length: 100` and one byte of
body, and stall. When the server closes one, another opens at once, so that many are held all the
time. Meanwhile 4 ordinary clients (keep-alive sessions) send `GET /v1/payments?limit=5` one after
another, each given up after 10 s (an error). Scenarios, one after another:

  front door        the shipped nginx config (deploy/k8s/front-door.conf.template, Debian's nginx)
                    in front of gunicorn, the slow clients and the ordinary ones both going through
                    it, with --slow slow connections
  gunicorn          gunicorn alone, with its request read deadline (GUNICORN_REQUEST_READ_TIMEOUT,
                    --deadline), with --few slow connections (the issue's twelve), then --slow
  gunicorn, before  the same without a deadline (one hour), as gunicorn was before it had one

Prints one table and writes it as JSON (--json, default .ci/artifacts/bench-slow-clients.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles

ROOT = Path(__file__).resolve().parent.parent

import sys  # noqa: E402

sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402 - after the repo root is on sys.path
import requests  # noqa: E402
from psycopg2 import sql  # noqa: E402

from bench import create_database, database_dsn, machine, start_server  # noqa: E402
from config import Config  # noqa: E402
from tests.helpers import closed_port, start_front_door  # noqa: E402

API_KEY = "bench-slow-clients-key-0123456789"
PARTIAL_HEADERS = b"GET /v1/payments?limit=5 HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
ONE_BODY_BYTE = (
    b"POST /v1/payments/charge HTTP/1.1\r\nHost: payments\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
    b"Idempotency-Key: bench-slow-client\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
)
ORDINARY_CLIENTS = 4
GIVE_UP_S = 10.0


@dataclass
class Result:
    """One scenario's figures for the ordinary clients, and what happened to the slow ones."""

    name: str
    slow_held: int
    slow_cut_off: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class SlowClients:
    """Keeps `count` slow connections open to host:port, on an event loop of its own, until stopped."""

    def __init__(self, host: str, port: int, count: int) -> None:
        """Aim at host:port with `count` connections."""
        self.host, self.port, self.count = host, port, count
        self.cut_off = 0
        self.open = 0
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def start(self) -> None:
        """Open the connections and wait until they are all held."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while self.open < self.count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Close every connection."""
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        holders = [asyncio.ensure_future(self._hold(index)) for index in range(self.count)]
        await self._stop.wait()
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)

    async def _hold(self, index: int) -> None:
        """One slow connection, reopened whenever the server closes it."""
        payload = PARTIAL_HEADERS if index % 2 else ONE_BODY_BYTE
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(payload)
                await writer.drain()
                self.open += 1
                try:
                    # Anything from the server (an answer, or the end of the connection) means cut off.
                    await reader.read(65536)
                finally:
                    self.open -= 1
                self.cut_off += 1
            except OSError:
                await asyncio.sleep(0.1)  # refused (backlog full): try again shortly
            finally:
                if writer is not None:
                    writer.close()


def ordinary_traffic(url: str, seconds: float) -> tuple[list[float], int]:
    """ORDINARY_CLIENTS keep-alive clients sending GET /v1/payments?limit=5 for `seconds`; latencies (s) and errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = API_KEY
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                ok = session.get(f"{url}/v1/payments?limit=5", timeout=GIVE_UP_S).status_code == 200
            except requests.RequestException:
                ok = False
                session = requests.Session()
                session.headers["X-API-Key"] = API_KEY
            with lock:
                if ok:
                    latencies.append(time.monotonic() - started)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(ORDINARY_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def scenario(name: str, url: str, slow: int, seconds: float) -> Result:
    """Hold `slow` slow connections to `url` while the ordinary clients run for `seconds`."""
    host, port = url.removeprefix("http://").split(":")
    # Warm up first (each worker's first requests open its database pool), with nobody slow about.
    ordinary_traffic(url, 1)
    holders = SlowClients(host, int(port), slow)
    holders.start()
    held = holders.open
    try:
        latencies, errors = ordinary_traffic(url, seconds)
    finally:
        cut_off = holders.cut_off
        holders.stop()
    ms = sorted(latency * 1000 for latency in latencies)
    cuts = quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99 or [float("nan")] * 99
    return Result(name, held, cut_off, len(ms) + errors, errors, cuts[49], cuts[98], ms[-1] if ms else float("nan"))


def main(argv: list[str]) -> int:
    """Run the three scenarios and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=200, help="slow connections held open")
    parser.add_argument("--few", type=int, default=12, help="slow connections of the smaller gunicorn scenarios")
    parser.add_argument("--duration", type=float, default=20, help="seconds of ordinary traffic per scenario")
    parser.add_argument("--deadline", type=float, default=5, help="gunicorn's request read deadline, in seconds")
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (default: a free one)")
    parser.add_argument("--json", default=str(ROOT / ".ci" / "artifacts" / "bench-slow-clients.json"))
    args = parser.parse_args(argv)

    base = Config.from_env()
    name = f"payments_bench_slow_{os.getpid()}"
    admin = psycopg2.connect(database_dsn(base, "postgres"))
    admin.autocommit = True
    logs = Path(tempfile.gettempdir())
    results: list[Result] = []
    try:
        dsn = create_database(admin, base, name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
        env.update(
            DATABASE_URL=dsn, RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING", API_KEYS=f"bench:{API_KEY}",
            NOTIFY_DISPATCHER_ENABLED="false", NOTIFICATION_SERVICE_URL="http://127.0.0.1:9",
        )  # fmt: skip
        for label, slow, deadline, behind_front_door in (
            ("front door", args.slow, args.deadline, True),
            ("gunicorn", args.few, args.deadline, False),
            ("gunicorn, before", args.few, 3600.0, False),
            ("gunicorn", args.slow, args.deadline, False),
            ("gunicorn, before", args.slow, 3600.0, False),
        ):
            server_env = {**env, "GUNICORN_REQUEST_READ_TIMEOUT": str(deadline)}
            log = logs / "bench-slow-clients-gunicorn.log"
            server = start_server(server_env, args.port or closed_port(), 2, 4, log)
            front_door = start_front_door(server.url) if behind_front_door else None
            try:
                url = front_door.url if front_door else server.url
                results.append(scenario(label, url, slow, args.duration))
            finally:
                if front_door is not None:
                    front_door.stop()
                server.stop()
            print(f"{label}: {asdict(results[-1])}", flush=True)
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()

    print(f"\n{machine()}; gunicorn -w 2 --threads 4, read deadline {args.deadline:g} s; "
          f"{ORDINARY_CLIENTS} ordinary clients for {args.duration:g} s, "
          f"each request given up after {GIVE_UP_S:g} s\n")  # fmt: skip
    print("| scenario | slow held | slow cut off | requests | errors | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        # nan (shown as -) when no request was answered at all
        figures = " | ".join("-" if ms != ms else f"{ms:.1f}" for ms in (r.p50_ms, r.p99_ms, r.max_ms))
        print(f"| {r.name} | {r.slow_held} | {r.slow_cut_off} | {r.requests} | {r.errors} | {figures} |")
    data = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "slow": args.slow,
        "duration_s": args.duration,
        "few": args.few,
        "deadline_s": args.deadline,
        "results": [asdict(r) for r in results],
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
