"""Shared test utilities: throwaway databases and servers, queries, waits and raw HTTP."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import requests
from psycopg2 import sql

from config import Config

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
DATA_TABLES = (
    "idempotency_keys", "payment_receipts", "payment_refunds", "payments", "notification_outbox",
    "simulator_transactions",
)  # fmt: skip
TRUNCATE_DATA = (
    "TRUNCATE notification_outbox, idempotency_keys, payment_receipts, payment_refunds, payments,"
    " simulator_transactions RESTART IDENTITY CASCADE"
)
INSERT_PAYMENT = """
INSERT INTO payments (trip_id, rider_id, driver_id, amount, amount_refunded, currency, method, status,
                      reference, created_at, updated_at, authorized_amount)
VALUES (%(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(amount_refunded)s, %(currency)s, %(method)s,
        %(status)s, %(reference)s, %(created_at)s, %(created_at)s, %(authorized_amount)s)
RETURNING payment_id
"""


def config_for_database(base: Config, name: str) -> Config:
    """Return `base` pointed at database `name` on the same server."""
    if base.DATABASE_URL:
        parts = urlsplit(base.DATABASE_URL)
        return base.with_overrides({"DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}"))})
    return base.with_overrides({"DB_NAME": name})


def admin_connect(base: Config) -> psycopg2.extensions.connection:
    """Connect to the server's maintenance database in autocommit mode (CREATE/DROP DATABASE).

    Behind a pooler (scripts/with_pgbouncer.py) TEST_ADMIN_DB_HOST/PORT name the server itself:
    the pooler would give these statements the service's statement timeout.
    """
    host, port = os.environ.get("TEST_ADMIN_DB_HOST"), os.environ.get("TEST_ADMIN_DB_PORT")
    if host and port and not base.DATABASE_URL:
        base = base.with_overrides({"DB_HOST": host, "DB_PORT": int(port)})
    conn = psycopg2.connect(config_for_database(base, "postgres").get_database_uri(), connect_timeout=5)
    conn.autocommit = True
    return conn


def _admin_execute(base: Config, statement: sql.Composable) -> None:
    """Run one statement on the server's maintenance database (CREATE/DROP DATABASE)."""
    conn = admin_connect(base)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def create_database(base: Config, prefix: str) -> str:
    """Create an empty, uniquely named database and return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_execute(base, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(base: Config, name: str) -> None:
    """Drop a database this run created, even if connections linger."""
    _admin_execute(base, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def row_counts(db: psycopg2.extensions.connection) -> dict[str, int]:
    """Rows in every data table (to prove a rejected request wrote nothing)."""
    counts = {}
    with db.cursor() as cur:
        for table in DATA_TABLES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            counts[table] = cur.fetchone()[0]
    return counts


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_stub(status: int = 200, body: bytes = b'{"status":"UP"}', delay: float = 0.0) -> Iterator[str]:
    """Serve every GET with `status` and `body` (after `delay` seconds); yield the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if delay:
                threading.Event().wait(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def database_env(config: Config, **extra: str) -> dict[str, str]:
    """This process's environment, with the DB_* / DATABASE_URL variables replaced by `config`'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_") and k != "DATABASE_URL"}
    if config.DATABASE_URL:
        env["DATABASE_URL"] = config.DATABASE_URL
    else:
        env.update(DB_HOST=config.DB_HOST, DB_PORT=str(config.DB_PORT), DB_NAME=config.DB_NAME, DB_USER=config.DB_USER)
        if config.DB_PASS:
            env["DB_PASS"] = config.DB_PASS
    # How to talk to the server (directly, or through a pooler) goes with where it is.
    env.update(
        DB_PREPARED_STATEMENTS=str(config.DB_PREPARED_STATEMENTS).lower(),
        DB_SESSION_OPTIONS=str(config.DB_SESSION_OPTIONS).lower(),
    )
    env.update(extra)
    return env


def query_rows(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one read-only statement over a connection of its own; return every row."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def query_value(dsn: str, statement: str) -> Any:
    """The single value a statement such as SELECT count(*) returns."""
    return query_rows(dsn, statement)[0][0]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def all_at_once(calls: list[Callable[[], T]]) -> list[T]:
    """Run every call on its own thread, released together by a barrier; return the results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def outbox_undelivered(dsn: str) -> int:
    """How many notifications the outbox still has to deliver (over a connection of its own)."""
    return query_value(dsn, "SELECT count(*) FROM notification_outbox WHERE status <> 'DELIVERED'")


def payment_count(config: Config) -> int:
    """How many payments the database named by `config` holds (over a connection of its own)."""
    return query_value(config.get_database_uri(), "SELECT count(*) FROM payments")


@dataclass
class Gunicorn:
    """A `gunicorn app:app` server started by a test: its URL, master process and metrics directory."""

    url: str
    process: subprocess.Popen[bytes]
    metrics_dir: str
    log_path: Path
    workers_wanted: int = 2

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The master's live worker processes (Linux: /proc/<pid>/task/<pid>/children)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def wait_for_workers(self, timeout: float = 30) -> bool:
        """Wait until the master runs its full set of workers again and they answer."""

        def all_workers_answer() -> bool:
            if len(self.worker_pids()) != self.workers_wanted:
                return False
            try:
                return requests.get(f"{self.url}/live", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        return wait_until(all_workers_answer, timeout, interval=0.1)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM) and remove its metrics directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def start_gunicorn(env: dict[str, str], workers: int = 2, threads: int = 8) -> Gunicorn:
    """Start `gunicorn -c gunicorn.conf.py app:app` on a free loopback port and wait until it answers.

    `env` is the server's whole environment; rate limiting is off unless it says otherwise. Its
    output goes to a file (a pipe nobody reads would block a server that logs a lot).
    Raises RuntimeError if the server exits or does not answer within 30 s.
    """
    port = closed_port()
    metrics_dir = tempfile.mkdtemp(prefix="payment-metrics-")
    log_path = Path(metrics_dir) / "server.log"
    server_env = {
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app", "-w", str(workers),
         "--threads", str(threads), "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT,
        env=server_env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Gunicorn(f"http://127.0.0.1:{port}", process, metrics_dir, log_path, workers)

    def answers_or_exited() -> bool:
        try:
            requests.get(f"{server.url}/live", timeout=0.5)
            return True
        except requests.RequestException:  # refused while binding, or a worker still booting
            return process.poll() is not None

    if wait_until(answers_or_exited, timeout=30, interval=0.1) and process.poll() is None:
        return server
    if process.poll() is not None:
        output = server.log_text()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise RuntimeError(f"gunicorn exited: {output}")
    server.stop()
    raise RuntimeError("gunicorn did not start within 30 s")


FRONT_DOOR_TEMPLATE = ROOT / "deploy" / "k8s" / "front-door.conf.template"
NGINX = "/usr/sbin/nginx"


def render_front_door(env: dict[str, str], template: Path = FRONT_DOOR_TEMPLATE) -> str:
    """The front door's config as the nginx image's entrypoint renders it.

    Its envsubst replaces `$NAME` and `${NAME}` for the defined variables whose names match
    NGINX_ENVSUBST_FILTER (^FRONT_DOOR_ in compose and the pod), and leaves every other `$` alone.
    """
    names = sorted((name for name in env if re.match(r"^FRONT_DOOR_", name)), key=len, reverse=True)
    text = template.read_text()
    for name in names:
        text = text.replace("${" + name + "}", env[name])
        value = env[name]
        text = re.sub(r"\$" + name + r"(?![A-Za-z0-9_])", lambda _, value=value: value, text)
    return text


@dataclass
class FrontDoor:
    """Debian's nginx running the shipped front-door config: its URL, process and directory."""

    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def log_text(self) -> str:
        """Everything nginx wrote so far."""
        return (self.directory / "nginx.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop nginx (SIGQUIT: finish what it serves) and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_front_door(upstream_url: str) -> FrontDoor:
    """Run nginx from deploy/k8s/front-door.conf.template (rendered as the image does) in front of `upstream_url`.

    nginx runs in the foreground as the current user, with its prefix (pid, temporary files) in a
    directory of its own, as the containers run it with `-p /tmp/`. As root, its workers stay root
    (the containers run it as an unprivileged user, where nginx switches to no other user either).
    Raises RuntimeError if nginx cannot start or does not answer within 10 s.
    """
    port = closed_port()
    directory = Path(tempfile.mkdtemp(prefix="front-door-"))
    env = {"FRONT_DOOR_PORT": f"127.0.0.1:{port}", "FRONT_DOOR_UPSTREAM": upstream_url.removeprefix("http://")}
    config = directory / "front-door.conf"
    config.write_text(render_front_door(env))
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    log = (directory / "nginx.log").open("wb")
    process = subprocess.Popen(
        [NGINX, "-p", f"{directory}/", "-e", "stderr", "-c", str(config), "-g", directives],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    front_door = FrontDoor(f"http://127.0.0.1:{port}", process, directory)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return process.poll() is not None

    if wait_until(listening, timeout=10) and process.poll() is None:
        return front_door
    output = front_door.log_text()
    front_door.stop()
    raise RuntimeError(f"nginx did not start: {output}")


def raw_request(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    """An HTTP/1.1 request as exact bytes (for requests no HTTP library would send)."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: payments", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send_raw(host: str, port: int, payload: bytes, timeout: float = 15) -> int:
    """Send raw bytes as one request; return the response status, or 0 if the server closed without one."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before reading everything (e.g. 413)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    if not data.startswith(b"HTTP/1."):
        return 0
    return int(data.split(b" ", 2)[1])
