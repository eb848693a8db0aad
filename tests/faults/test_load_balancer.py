"""Scenario 11: three instances behind HAProxy; one is SIGKILLed, one restarted gracefully, one drained.

HAProxy (Debian's package; `.ci/run` installs it) runs on a free loopback port in front of three
gunicorn instances on one database, health-checking `/ready` every 0.5 s. It retries a request only
when it could not connect (HAProxy's default `retry-on conn-failure`), never a POST it already sent;
the clients retry with the same key on a dropped connection, a 502, a 503 or a 504, as careful
clients behind a load balancer do, and idempotency makes that safe. IDEMPOTENCY_LOCK_TIMEOUT=5 (default
60), as in scenario 3: the claims of the killed instance free themselves only after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.faults.load import ChargeClients, Verdict, check_against_database, keys_in_flight
from tests.helpers import Gunicorn, closed_port, wait_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONFIG = """
global
    maxconn 1024
    stats socket {admin} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    retries 2
    option redispatch
frontend payments
    bind 127.0.0.1:{port}
    default_backend instances
backend instances
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""
FAULT_WINDOW = 4.0  # seconds after a fault within which its 5xx answers belong to it


class HAProxy:
    """A running haproxy and its admin socket."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], admin: str) -> None:
        self.url, self.process, self.admin = url, process, admin

    def command(self, line: str) -> str:
        """Send one command to the admin socket; return its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(self.admin)
            sock.sendall(line.encode() + b"\n")
            return sock.recv(65536).decode()

    def up(self) -> list[str]:
        """The servers HAProxy currently sends traffic to."""
        rows = [row.split(",") for row in self.command("show stat").splitlines()[1:]]
        # Columns: proxy name, server name, ..., status (18th); BACKEND is the backend's own summary row.
        return [row[1] for row in rows if len(row) > 17 and row[0] == "instances" and row[1] != "BACKEND"
                and row[17] == "UP"]  # fmt: skip


@pytest.fixture
def haproxy() -> Iterator[Callable[[dict[str, str]], HAProxy]]:
    """Factory: haproxy in front of the given servers (name -> base URL); stopped afterwards."""
    if not os.path.exists(HAPROXY):
        pytest.skip("haproxy is not installed (Debian package haproxy; .ci/run installs it)")
    started: list[subprocess.Popen[bytes]] = []
    folder = tempfile.mkdtemp(prefix="payment-haproxy-")

    def start(servers: dict[str, str]) -> HAProxy:
        port = closed_port()
        admin = f"{folder}/admin.sock"
        lines = "\n".join(f"    server {name} {url.removeprefix('http://')} check" for name, url in servers.items())
        config = Path(folder) / "haproxy.cfg"
        config.write_text(CONFIG.format(admin=admin, port=port, servers=lines))
        process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(process)
        balancer = HAProxy(f"http://127.0.0.1:{port}", process, admin)

        def all_up() -> bool:
            try:
                return len(balancer.up()) == len(servers)
            except OSError:
                return False

        assert wait_until(all_up, timeout=20), "haproxy did not see every instance ready"
        return balancer

    yield start
    for process in started:
        process.terminate()
        process.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


def kill_instance(server: Gunicorn) -> None:
    """SIGKILL an instance: its master and every worker, as when its machine dies."""
    pids = [server.process.pid, *server.worker_pids()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.process.wait(10)


def test_behind_haproxy_a_killed_a_restarted_and_a_drained_instance_lose_and_duplicate_nothing(
    fault_dsn: str,
    fault_server: Callable[..., Gunicorn],
    haproxy: Callable[[dict[str, str]], HAProxy],
    report: Callable[[Verdict], None],
) -> None:
    # IDEMPOTENCY_LOCK_TIMEOUT=5 as in scenario 3: the killed instance cannot give its claims back.
    servers = {name: fault_server(IDEMPOTENCY_LOCK_TIMEOUT=5) for name in ("a", "b", "c")}
    balancer = haproxy({name: server.url for name, server in servers.items()})
    clients = ChargeClients(balancer.url, count=6, retry_statuses=frozenset({429, 502, 503, 504})).start()
    time.sleep(3)

    faults: list[float] = [time.monotonic()]
    kill_instance(servers["a"])
    assert wait_until(lambda: "a" not in balancer.up(), timeout=10), "haproxy kept sending to the dead instance"
    time.sleep(2)

    faults.append(time.monotonic())
    os.kill(servers["b"].process.pid, signal.SIGHUP)  # gunicorn: new workers, old ones finish and exit
    assert servers["b"].wait_for_workers(timeout=30)
    time.sleep(2)

    faults.append(time.monotonic())
    balancer.command("set server instances/c state drain")
    time.sleep(2)  # requests in flight on c finish; no new ones arrive
    servers["c"].stop()
    time.sleep(3)
    ledger = clients.stop()

    present, duplicates, orphans = check_against_database(fault_dsn, ledger)
    outside = [a for a in ledger.server_errors() if not any(f <= a.started <= f + FAULT_WINDOW for f in faults)]
    statuses = dict(sorted(ledger.statuses().items()))
    report(
        Verdict(
            "11. HAProxy: one instance killed, one restarted, one drained", len(ledger.attempts),
            len(ledger.acknowledged), present, duplicates, orphans, sum(k.stuck for k in ledger.keys),
            len(ledger.server_errors(503)), len(ledger.other_5xx()), None,
            f"statuses {statuses} (0 = connection dropped); every 5xx within {FAULT_WINDOW:g} s of a fault:"
            f" {not outside}; instances up at the end: {balancer.up()}",
        )
    )  # fmt: skip

    assert present == len(ledger.acknowledged) > 0
    assert (duplicates, orphans) == (0, 0)
    assert not any(k.stuck for k in ledger.keys)
    assert outside == [], "a 5xx outside the fault windows"
    assert keys_in_flight(fault_dsn) == 0
    assert balancer.up() == ["b"]
    assert requests.get(f"{balancer.url}/ready", timeout=5).status_code == 200
