"""Small test utilities: a closed port and a throwaway HTTP server on loopback."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from config import Config


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
    env.update(extra)
    return env


def payment_count(config: Config) -> int:
    """How many payments the database named by `config` holds (over a connection of its own)."""
    import psycopg2

    conn = psycopg2.connect(config.get_database_uri())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM payments")
            return cur.fetchone()[0]
    finally:
        conn.close()
