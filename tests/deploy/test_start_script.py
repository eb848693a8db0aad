"""The container's start command, run here as an unprivileged user against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.utils import canonicalize_name

from config import Config
from tests.helpers import (
    closed_port,
    config_for_database,
    create_database,
    database_env,
    drop_database,
    payment_count,
    wait_until,
)
from tests.locks import RUNTIME_LOCK, applies, locked

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@pytest.fixture
def fresh_database(base_config: Config) -> Iterator[Config]:
    """An empty database, as a new deployment would find it."""
    name = create_database(base_config, "payments_start")
    yield config_for_database(base_config, name)
    drop_database(base_config, name)


def open_to_others(path: Path) -> bool:
    """True when a user with no special rights can reach `path` (every parent directory traversable)."""
    path = path.resolve()
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in [*path.parents, path] if parent.is_dir())


@pytest.fixture(scope="session")
def runtime_bin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ directory of a Python environment with the runtime requirements that nobody can use.

    As root, this machine's own interpreter may sit in a private home directory, so a fresh venv of
    the system Python 3.11 is built in a world-readable place, much as the image installs its own.
    """
    if os.geteuid() != 0:
        yield Path(sys.executable).parent
        return
    if not open_to_others(ROOT):
        pytest.skip(f"{ROOT} is not readable by other users")
    system_python = Path("/usr/bin/python3.11")
    if not system_python.exists():
        pytest.skip("no system Python 3.11 for an unprivileged user")
    venv = Path(tempfile.mkdtemp(prefix="payment-runtime-"))
    venv.chmod(0o755)
    try:
        subprocess.run([str(system_python), "-m", "venv", str(venv)], check=True, capture_output=True)
        install = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-r", str(ROOT / "requirements.txt")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if install.returncode != 0:
            pytest.fail(f"could not install the runtime requirements: {install.stderr[-2000:]}")
        yield venv / "bin"
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_the_runtime_lock_installs_exactly_its_packages_into_a_fresh_venv(runtime_bin: Path) -> None:
    """`pip install -r requirements.txt` (the runtime_bin fixture, as root) gives the locked set, no more, no less."""
    if os.geteuid() != 0:
        pytest.skip("as an ordinary user the fixture reuses this environment (the dev set), not a fresh venv")
    probe = "import json, platform; v = platform.python_version(); print(json.dumps([v, v.rsplit('.', 1)[0]]))"
    full, short = json.loads(
        subprocess.run([str(runtime_bin / "python"), "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    environment = {"python_full_version": full, "python_version": short}
    expected = {name: lock.version for name, lock in locked(RUNTIME_LOCK).items() if applies(lock, environment)}
    listing = subprocess.run(
        [str(runtime_bin / "python"), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    installed = {
        canonicalize_name(entry["name"]): entry["version"]
        for entry in json.loads(listing)
        if canonicalize_name(entry["name"]) not in {"pip", "setuptools", "wheel"}
    }

    assert installed == expected


def unprivileged_prefix(config: Config) -> list[str]:
    """Run as nobody when we are root (as the image runs as paymentservice); as ourselves otherwise."""
    if os.geteuid() != 0:
        return []
    if config.DB_HOST.startswith("/") and not open_to_others(Path(config.DB_HOST)):
        pytest.skip("the database's socket directory is private to its owner; nobody could not connect")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def start_service(config: Config, port: int, metrics_dir: Path, bin_dir: Path) -> subprocess.Popen[bytes]:
    env = database_env(
        config,
        PATH=f"{bin_dir}:/usr/bin:/bin",
        HOME="/tmp",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        SEED_ON_START="true",
        DB_WAIT_SECONDS="20",
        LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [*unprivileged_prefix(config), "sh", "scripts/start.sh"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"start script exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            return requests.get(f"{url}/ready", timeout=1).status_code == 200
        except requests.RequestException:  # refused while binding, or a worker still booting
            return False

    if not wait_until(ready, timeout=60, interval=0.2):
        pytest.fail("service did not become ready within 60 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_start_script_migrates_seeds_serves_and_a_restart_keeps_every_payment(
    fresh_database: Config, runtime_bin: Path
) -> None:
    metrics_dir = Path(tempfile.mkdtemp(prefix="payment-start-metrics-"))
    metrics_dir.chmod(0o777)
    port = closed_port()
    url = f"http://127.0.0.1:{port}"

    first = start_service(fresh_database, port, metrics_dir, runtime_bin)
    try:
        wait_ready(first, url)
        if os.geteuid() == 0:
            uid_line = next(
                line for line in Path(f"/proc/{first.pid}/status").read_text().splitlines() if line.startswith("Uid:")
            )
            assert uid_line.split()[1] == str(NOBODY)
        seeded = payment_count(fresh_database)
        listing = requests.get(f"{url}/v1/payments?limit=5", timeout=5).json()
        refund = requests.post(f"{url}/v1/payments/{listing['payments'][0]['payment_id']}/refund", timeout=5)
    finally:
        stop(first)

    second = start_service(fresh_database, port, metrics_dir, runtime_bin)
    try:
        wait_ready(second, url)
        after_restart = payment_count(fresh_database)
        again = requests.get(f"{url}/v1/payments/{listing['payments'][0]['payment_id']}", timeout=5).json()
    finally:
        stop(second)
        shutil.rmtree(metrics_dir, ignore_errors=True)

    assert seeded > 200 and listing["count"] == 5
    assert refund.status_code == 200
    assert after_restart == seeded
    assert again["status"] == "REFUNDED"
