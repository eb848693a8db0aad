"""Run a command with PgBouncer (transaction mode) between it and the configured PostgreSQL.

    python scripts/with_pgbouncer.py -- COMMAND...

Starts Debian's pgbouncer on a free loopback port in front of DB_HOST:DB_PORT (trust auth, as the
test server), sets DB_HOST/DB_PORT to it with DB_PREPARED_STATEMENTS=false and DB_SESSION_OPTIONS=false
for the command, and stops it afterwards. PgBouncer's connect_query gives every server connection the
session settings the service would otherwise send itself. Exits with the command's status; 3 when
pgbouncer is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
[databases]
* = host={host} port={port} connect_query='{connect_query}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = options,extra_float_digits
pidfile = {folder}/pgbouncer.pid
logfile = {folder}/pgbouncer.log
log_connections = 0
log_disconnections = 0
"""


# What the service sends as startup options when it connects directly (database/pool.py).
CONNECT_QUERY = "SET timezone TO UTC; SET statement_timeout = 5000; SET idle_in_transaction_session_timeout = 30000"


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str]) -> int:
    """Start pgbouncer, run the command through it, stop it."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        print("with_pgbouncer: pgbouncer is not installed (Debian package pgbouncer)", file=sys.stderr)
        return 3
    folder = tempfile.mkdtemp(prefix="payment-pgbouncer-")
    os.chmod(folder, 0o755)  # pgbouncer refuses to run as root; the user it switches to must read this
    listen = free_port()
    user = os.environ.get("DB_USER", "postgres")
    Path(folder, "users.txt").write_text(f'"{user}" ""\n')
    Path(folder, "pgbouncer.ini").write_text(
        CONFIG.format(
            host=os.environ.get("DB_HOST", "127.0.0.1"), port=os.environ.get("DB_PORT", "5432"), listen=listen,
            folder=folder, connect_query=CONNECT_QUERY,
        )
    )  # fmt: skip
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    bouncer = subprocess.Popen([binary, "-q", *as_user, f"{folder}/pgbouncer.ini"])
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            if bouncer.poll() is not None:
                log = Path(folder, "pgbouncer.log")
                print(log.read_text(errors="replace") if log.exists() else "", file=sys.stderr)
                print("with_pgbouncer: pgbouncer did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
        env = {
            **os.environ,
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(listen),
            "DB_PREPARED_STATEMENTS": "false",
            "DB_SESSION_OPTIONS": "false",
        }
        print(f"with_pgbouncer: PgBouncer (transaction mode) on 127.0.0.1:{listen}", flush=True)
        return subprocess.call(command, env=env)
    finally:
        bouncer.terminate()
        bouncer.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
