"""Run a command with PgBouncer (transaction mode) between it and the configured PostgreSQL.

    python scripts/with_pgbouncer.py -- COMMAND...

Starts Debian's pgbouncer on a free loopback port in front of DB_HOST:DB_PORT (trust auth, as the
test server), sets DB_HOST/DB_PORT to it with DB_PREPARED_STATEMENTS=false and DB_SESSION_OPTIONS=false
for the command, and stops it afterwards. PgBouncer's connect_query gives every server connection the
session settings the service would otherwise send itself. Exits with the command's status; 3 when
pgbouncer is not installed.

The fault scenarios start the same configuration through `PgBouncer` (tests/faults).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Config  # noqa: E402 - needs the repo root on sys.path
from database.pool import session_settings  # noqa: E402

# What decides how long PgBouncer holds a client while the database is away and how soon it serves
# again once the database is back. docker-compose.yml sets the same values (a test checks) and the
# docs/operations.md, "Behind PgBouncer", says why each; all of them exist in 1.18 (Debian) and 1.23.
OUTAGE_SETTINGS: dict[str, str] = {
    # After a failed server login (refused, or "the database system is starting up") PgBouncer
    # tries again only this much later, and meanwhile fails every client that finds no server
    # ("server login has been failing, try again later"). The default 15 s went on answering 503
    # for up to 15 s after the database was back; a retry a second costs a refused connect.
    "server_login_retry": "1",
    # How long a query may wait for a server connection. A query queued before the first failed
    # login waits for a retry to succeed: with the default 120 s it hung 30 s in a 16 s outage.
    # 5 s, as the service's DB_POOL_TIMEOUT for a free connection of its own pool.
    "query_wait_timeout": "5",
    # A connection attempt to a host that does not answer at all (a failover, a dropped route)
    # gives up after this, as the service's DB_CONNECT_TIMEOUT, not the default 15 s.
    "server_connect_timeout": "3",
    # Keepalives on PgBouncer's sockets: a server gone without closing its connections (no FIN,
    # no RST) is noticed within 15 + 3 x 5 s, as the service's own keepalives do, not the OS's 2 h.
    "tcp_keepidle": "15",
    "tcp_keepintvl": "5",
    "tcp_keepcnt": "3",
}

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
{outage_settings}
"""

# What the service sends as startup options when it connects directly (database/pool.py), as SQL.
CONNECT_QUERY = "; ".join(
    f"SET {name} = {value}" for name, value in session_settings(Config.DB_STATEMENT_TIMEOUT_MS).items()
)

# The service's settings behind a pooler in transaction mode (see docs/operations.md, "Behind PgBouncer").
SERVICE_SETTINGS = {"DB_PREPARED_STATEMENTS": "false", "DB_SESSION_OPTIONS": "false"}


class PgBouncerError(RuntimeError):
    """pgbouncer is missing, or did not start."""


def binary() -> str | None:
    """Path of the pgbouncer executable, or None when it is not installed."""
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    return found if os.path.exists(found) else None


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_as(host: str) -> str | None:
    """The user pgbouncer switches to: none unless we are root, which pgbouncer refuses to run as.

    A Unix-socket directory is reachable by its owner for certain (the embedded database's, in
    .pgdata, is mode 700 and owned by the user its server runs as), so pgbouncer runs as that
    owner; in front of a TCP address it runs as `postgres`, as Debian's pgbouncer service does.
    """
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        owner = Path(host).stat().st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    return "postgres"


class PgBouncer:
    """pgbouncer in transaction mode on a free loopback port in front of `host:port`, while in a `with`."""

    def __init__(self, host: str, port: int | str, user: str) -> None:
        """Remember where the database is and which role connects (trust auth)."""
        self.host, self.port, self.user = host, str(port), user
        self.listen = 0
        self.folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str) -> str:
        """A libpq URL for `database` through this pgbouncer."""
        return f"postgresql://{self.user}@127.0.0.1:{self.listen}/{database}"

    def log_text(self) -> str:
        """What pgbouncer logged so far."""
        log = self.folder / "pgbouncer.log" if self.folder else None
        return log.read_text(errors="replace") if log and log.exists() else ""

    def __enter__(self) -> PgBouncer:
        """Write the configuration, start pgbouncer and wait until it listens."""
        executable = binary()
        if executable is None:
            raise PgBouncerError("pgbouncer is not installed (Debian package pgbouncer)")
        self.folder = Path(tempfile.mkdtemp(prefix="payment-pgbouncer-"))
        self.listen = free_port()
        (self.folder / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            CONFIG.format(
                host=self.host, port=self.port, listen=self.listen, folder=self.folder, connect_query=CONNECT_QUERY,
                outage_settings="\n".join(f"{name} = {value}" for name, value in OUTAGE_SETTINGS.items()),
            )
        )  # fmt: skip
        user = run_as(self.host)
        if user is not None:
            shutil.chown(self.folder, user)  # its log and pid file go here
        as_user = ["-u", user] if user else []
        self._process = subprocess.Popen([executable, "-q", *as_user, str(self.folder / "pgbouncer.ini")])
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.listen)) == 0:
                    return self
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        log = self.log_text()
        self.__exit__(None, None, None)
        raise PgBouncerError(f"pgbouncer did not start\n{log}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Stop pgbouncer and delete its files."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def main(argv: list[str]) -> int:
    """Start pgbouncer, run the command through it, stop it."""
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    host, port = os.environ.get("DB_HOST", "127.0.0.1"), os.environ.get("DB_PORT", "5432")
    try:
        with PgBouncer(host, port, os.environ.get("DB_USER", "postgres")) as bouncer:
            env = {**os.environ, "DB_HOST": "127.0.0.1", "DB_PORT": str(bouncer.listen), **SERVICE_SETTINGS}
            # The tests create and drop their databases on the server itself: through PgBouncer every
            # session gets the service's 5 s statement timeout, which a DROP DATABASE on a busy
            # machine outlasted (make test failed in teardown).
            env["TEST_ADMIN_DB_HOST"] = os.environ.get("DB_HOST", "127.0.0.1")
            env["TEST_ADMIN_DB_PORT"] = os.environ.get("DB_PORT", "5432")
            print(f"with_pgbouncer: PgBouncer (transaction mode) on 127.0.0.1:{bouncer.listen}", flush=True)
            return subprocess.call(command, env=env)
    except PgBouncerError as exc:
        print(f"with_pgbouncer: {exc}", file=sys.stderr)
        return 3 if binary() is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
