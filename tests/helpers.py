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
from models.states import MONEY_IN, TAKEN, PaymentStatus, TransactionKind, TransactionStatus, transaction_status

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
DATA_TABLES = (
    "idempotency_keys", "payment_receipts", "payment_refunds", "payments", "notification_outbox",
    "simulator_transactions", "payment_transactions",
)  # fmt: skip
TRUNCATE_DATA = (
    "TRUNCATE notification_outbox, idempotency_keys, payment_receipts, payment_transactions, payment_refunds,"
    " payments, simulator_transactions RESTART IDENTITY CASCADE"
)
INSERT_PAYMENT = """
INSERT INTO payments (trip_id, rider_id, driver_id, amount, amount_refunded, currency, method, status,
                      reference, created_at, updated_at, authorized_amount)
VALUES (%(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(amount_refunded)s, %(currency)s, %(method)s,
        %(status)s, %(reference)s, %(created_at)s, %(created_at)s, %(authorized_amount)s)
RETURNING payment_id
"""


# What a payment does at the gateway, at most one at a time (refunds and chargebacks run beside them).
OPERATIONS = tuple(kind for kind in TransactionKind if kind not in (TransactionKind.REFUND, TransactionKind.CHARGEBACK))
# The ledger's invariants (contract sections 2 and 13), one statement each; every row returned is a payment
# (or refund, or transaction) that breaks it, with what `ledger_problems` says of it.
# (a) A payment money was taken for has an amount equal to its SUCCEEDED PURCHASE/CAPTURE transactions; one
#     that was not taken has none (0.00 rows of an early version have no transactions and are left out).
LEDGER_MONEY_IN = """
SELECT p.payment_id, p.status, p.amount, coalesce(t.taken, 0) AS taken
FROM payments AS p
LEFT JOIN (SELECT payment_id, sum(amount) AS taken
           FROM payment_transactions
           WHERE status = 'SUCCEEDED' AND kind = ANY(%(money_in)s)
           GROUP BY payment_id) AS t ON t.payment_id = p.payment_id
WHERE (p.status = ANY(%(taken)s) AND p.amount > 0 AND p.amount <> coalesce(t.taken, 0))
   OR (p.status <> ALL(%(taken)s) AND coalesce(t.taken, 0) <> 0)
ORDER BY p.payment_id
"""
# (b) amount_refunded equals its REFUND transactions that are not FAILED, and its refund records that are not
#     FAILED, and never exceeds the amount.
LEDGER_REFUNDED = """
SELECT p.payment_id, p.amount, p.amount_refunded, coalesce(t.total, 0) AS in_transactions,
       coalesce(r.total, 0) AS in_records
FROM payments AS p
LEFT JOIN (SELECT payment_id, sum(amount) AS total
           FROM payment_transactions
           WHERE kind = 'REFUND' AND status <> 'FAILED'
           GROUP BY payment_id) AS t ON t.payment_id = p.payment_id
LEFT JOIN (SELECT payment_id, sum(refund_amount) AS total
           FROM payment_refunds
           WHERE status <> 'FAILED'
           GROUP BY payment_id) AS r ON r.payment_id = p.payment_id
WHERE p.amount_refunded <> coalesce(t.total, 0)
   OR p.amount_refunded <> coalesce(r.total, 0)
   OR p.amount_refunded > p.amount
ORDER BY p.payment_id
"""
# (c) Each refund record has its REFUND transaction (at most one: refund_id is unique there), of its payment,
#     with its status and amount.
LEDGER_REFUND_RECORDS = """
SELECT r.refund_id, r.payment_id, r.status, r.refund_amount,
       t.transaction_id, t.payment_id AS transaction_payment_id, t.status AS transaction_status, t.amount
FROM payment_refunds AS r
LEFT JOIN payment_transactions AS t ON t.refund_id = r.refund_id
WHERE t.transaction_id IS NULL
   OR t.payment_id <> r.payment_id
   OR t.status <> r.status
   OR t.amount <> r.refund_amount
ORDER BY r.refund_id
"""
# (d) A PENDING payment has exactly one operation (anything but a refund or chargeback) in flight, and
#     (e) a payment in any other status has none: the transaction settles with the payment's status.
LEDGER_IN_FLIGHT = """
SELECT p.payment_id, p.status,
       count(t.transaction_id) FILTER (WHERE t.status = 'PENDING' AND t.kind = ANY(%(operations)s)) AS in_flight
FROM payments AS p
LEFT JOIN payment_transactions AS t ON t.payment_id = p.payment_id
GROUP BY p.payment_id
HAVING (p.status = %(pending)s AND p.amount > 0
        AND count(t.transaction_id) FILTER (WHERE t.status = 'PENDING' AND t.kind = ANY(%(operations)s)) <> 1)
    OR (p.status <> %(pending)s
        AND count(t.transaction_id) FILTER (WHERE t.status = 'PENDING' AND t.kind = ANY(%(operations)s)) <> 0)
ORDER BY p.payment_id
"""
# (f) Every payment of more than 0.00 opened with a PURCHASE (a charge) or an AUTHORIZE (a hold).
LEDGER_OPENED = """
SELECT p.payment_id, p.authorized_amount IS NOT NULL AS is_hold
FROM payments AS p
WHERE p.amount > 0
  AND NOT EXISTS (SELECT 1 FROM payment_transactions AS t
                  WHERE t.payment_id = p.payment_id
                    AND t.kind = CASE WHEN p.authorized_amount IS NULL THEN 'PURCHASE' ELSE 'AUTHORIZE' END)
ORDER BY p.payment_id
"""
# (g) A transaction is in its payment's currency.
LEDGER_CURRENCY = """
SELECT t.transaction_id, t.payment_id, t.currency, p.currency AS payment_currency
FROM payment_transactions AS t
JOIN payments AS p ON p.payment_id = t.payment_id
WHERE t.currency <> p.currency
ORDER BY t.transaction_id
"""
SELECT_TRANSACTIONS_OF = """
SELECT transaction_id, payment_id, kind, status, amount, currency, gateway, gateway_reference, error_code,
       refund_id, created_at, updated_at
FROM payment_transactions
WHERE payment_id = %(payment_id)s
ORDER BY transaction_id
"""


def ledger_problems(target: psycopg2.extensions.connection | str) -> list[str]:
    """Every break of the ledger's invariants in a database (a connection, or a DSN); empty when it holds.

    For every payment: (a) taken (SUCCESS, PARTIALLY_REFUNDED, REFUNDED) and more than 0.00, its amount
    is its SUCCEEDED PURCHASE/CAPTURE transactions, and not taken it has none; (b) amount_refunded is
    its REFUND transactions that are not FAILED and its refund records that are not FAILED, and at most
    the amount; (c) each refund record has one REFUND transaction of the same payment, status and
    amount; (d) PENDING (over 0.00), exactly one operation other than a refund is PENDING, and (e) in any
    other status none is; (f) over 0.00, it opened with a PURCHASE, or an AUTHORIZE for a hold; (g) its
    transactions are in its currency. Reads in the connection's transaction, if it has one open.
    """
    conn = psycopg2.connect(target) if isinstance(target, str) else target
    params = {
        "money_in": [str(kind) for kind in MONEY_IN],
        "taken": [str(status) for status in TAKEN],
        "operations": [str(kind) for kind in OPERATIONS],
        "pending": str(PaymentStatus.PENDING),
    }
    problems: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(LEDGER_MONEY_IN, params)
            problems += [
                f"payment {pid} ({status}, amount {amount}): its SUCCEEDED PURCHASE/CAPTURE transactions sum to {taken}"
                for pid, status, amount, taken in cur.fetchall()
            ]
            cur.execute(LEDGER_REFUNDED)
            problems += [
                f"payment {pid} (amount {amount}): amount_refunded {refunded}, REFUND transactions not FAILED"
                f" {in_transactions}, refund records not FAILED {in_records}"
                for pid, amount, refunded, in_transactions, in_records in cur.fetchall()
            ]
            cur.execute(LEDGER_REFUND_RECORDS)
            for refund_id, pid, status, amount, transaction_id, t_pid, t_status, t_amount in cur.fetchall():
                if transaction_id is None:
                    problems.append(f"refund {refund_id} of payment {pid} ({status}, {amount}): no REFUND transaction")
                else:
                    problems.append(
                        f"refund {refund_id} of payment {pid} ({status}, {amount}) has transaction {transaction_id}"
                        f" of payment {t_pid} ({t_status}, {t_amount})"
                    )
            cur.execute(LEDGER_IN_FLIGHT, params)
            pending = PaymentStatus.PENDING
            problems += [
                f"payment {pid} ({status}): PENDING operations {in_flight}, expected {int(status == pending)}"
                for pid, status, in_flight in cur.fetchall()
            ]
            cur.execute(LEDGER_OPENED)
            problems += [
                f"payment {pid} has no {'AUTHORIZE' if is_hold else 'PURCHASE'} transaction"
                for pid, is_hold in cur.fetchall()
            ]
            cur.execute(LEDGER_CURRENCY)
            problems += [
                f"transaction {tid} of payment {pid} is in {currency}, the payment in {payment_currency}"
                for tid, pid, currency, payment_currency in cur.fetchall()
            ]
    finally:
        if conn is not target:
            conn.close()
    return problems


def assert_ledger_holds(target: psycopg2.extensions.connection | str) -> None:
    """Fail the test, listing every problem, when the ledger's invariants do not hold (see ledger_problems)."""
    problems = ledger_problems(target)
    assert not problems, "ledger invariants broken:\n" + "\n".join(problems)


def transactions_of(target: psycopg2.extensions.connection | str, payment_id: int) -> list[dict[str, Any]]:
    """A payment's transactions as rows (column name to value), oldest first."""
    conn = psycopg2.connect(target) if isinstance(target, str) else target
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_TRANSACTIONS_OF, {"payment_id": payment_id})
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        if conn is not target:
            conn.close()


SELECT_PAYMENT_AND_REFUNDS = """
SELECT p.payment_id, p.status, p.amount, p.currency, r.refund_id, r.refund_amount, r.status AS refund_status,
       r.gateway, r.gateway_reference, r.error_code
FROM payments AS p
LEFT JOIN payment_refunds AS r ON r.payment_id = p.payment_id
WHERE p.payment_id = %(payment_id)s
ORDER BY r.refund_id
"""
HISTORY_FIELDS = ("kind", "status", "amount", "currency", "gateway", "gateway_reference", "error_code", "refund_id")


def loaded_history_problems(target: psycopg2.extensions.connection | str, payment_ids: list[int]) -> list[str]:
    """Where the history of payments no gateway took (CSV rows, CASH charges) is not what section 13 says.

    Each has one PURCHASE of its amount, settled as its status says (SUCCEEDED, FAILED, PENDING) with
    gateway, reference and error code null, then one REFUND per refund record, as that record, in order.
    """
    conn = psycopg2.connect(target) if isinstance(target, str) else target
    problems = []
    try:
        for payment_id in payment_ids:
            with conn.cursor() as cur:
                cur.execute(SELECT_PAYMENT_AND_REFUNDS, {"payment_id": payment_id})
                rows = cur.fetchall()
            if not rows:
                problems.append(f"payment {payment_id} does not exist")
                continue
            _, status, amount, currency = rows[0][:4]
            expected = [("PURCHASE", str(transaction_status(status)), amount, currency, None, None, None, None)]
            expected += [
                ("REFUND", refund_status, refund_amount, currency, gateway, reference,
                 error_code if refund_status == TransactionStatus.FAILED else None, refund_id)
                for *_, refund_id, refund_amount, refund_status, gateway, reference, error_code in rows
                if refund_id is not None
            ]  # fmt: skip
            found = [tuple(t[name] for name in HISTORY_FIELDS) for t in transactions_of(conn, payment_id)]
            if found != expected:
                problems.append(f"payment {payment_id} ({status}): transactions {found}, expected {expected}")
    finally:
        if conn is not target:
            conn.close()
    return problems


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
    for _ in range(3):
        try:
            return _start_gunicorn_once(env, workers, threads)
        except PortTakenError:
            # Another process bound the free port first (a fake service, another test's server): take another.
            continue
    raise RuntimeError("gunicorn could not bind a free port three times in a row")


class PortTakenError(RuntimeError):
    """The port chosen for gunicorn was bound by another process before gunicorn could bind it."""


def _start_gunicorn_once(env: dict[str, str], workers: int, threads: int) -> Gunicorn:
    """One attempt of start_gunicorn on one free port; PortTakenError when another process holds it."""
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
            # Only this service's own answer counts: another process may hold the port (then gunicorn exits).
            answer = requests.get(f"{server.url}/live", timeout=0.5)
            if answer.status_code == 200 and answer.headers.get("Content-Type", "").startswith("application/json"):
                return answer.json() == {"alive": True} or process.poll() is not None
            return process.poll() is not None
        except (requests.RequestException, ValueError):  # refused while binding, a worker still booting
            return process.poll() is not None

    if wait_until(answers_or_exited, timeout=30, interval=0.1) and process.poll() is None:
        return server
    if process.poll() is not None:
        output = server.log_text()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if "Connection in use" in output or "Address already in use" in output:
            raise PortTakenError(output)
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
