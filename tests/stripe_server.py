"""A real Stripe-compatible server for tests (localstripe, from PyPI) and an HTTP proxy that can fail in front of it.

localstripe keeps its objects in memory and, after every write, pickles them all to one fixed file
(/tmp/localstripe.pickle). The launcher below turns that write off: several test processes run
servers side by side, and none of them needs its objects after it stops.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
import stripe

from tests.helpers import closed_port, wait_until

LAUNCH = """
import sys
import localstripe.resources
localstripe.resources.Store.dump_to_disk = lambda self: None
from localstripe.server import start
sys.argv = ["localstripe", "--port", sys.argv[1], "--from-scratch"]
start()
"""
API_KEY = "sk_test_payment_service"


@dataclass
class LocalStripe:
    """A running localstripe: its address and an SDK client to look at what it holds."""

    url: str
    process: subprocess.Popen[bytes]
    client: stripe.StripeClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = stripe.StripeClient(API_KEY, base_addresses={"api": self.url}, max_network_retries=0)

    def flush(self) -> None:
        """Forget every object (localstripe's own endpoint)."""
        requests.delete(f"{self.url}/_config/data", timeout=5).raise_for_status()

    def payment_intents(self) -> list[Any]:
        """Every PaymentIntent it holds, page after page."""
        found: list[Any] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self.client.v1.payment_intents.list(params=params)
            found.extend(page.data)
            if not page.has_more or not page.data:
                return found
            params["starting_after"] = page.data[-1].id

    def refunds(self, payment_intent: str) -> list[Any]:
        """The refunds of one PaymentIntent."""
        return list(self.client.v1.refunds.list(params={"payment_intent": payment_intent}).data)

    def captured(self, intent: Any) -> int:
        """What the PaymentIntent's charge took, in minor units.

        localstripe captures less than the hold the way it models it: the charge keeps the held amount
        and the rest is released as a refund carrying none of our metadata.
        """
        latest = intent.latest_charge
        charge = self.client.v1.charges.retrieve(latest if isinstance(latest, str) else latest["id"])
        released = sum(r.amount for r in self.refunds(intent.id) if "refund_id" not in (r.metadata or {}))
        assert charge.captured
        return charge.amount - released


@contextmanager
def local_stripe() -> Iterator[LocalStripe]:
    """Start localstripe on a free loopback port; stop it afterwards."""
    port = closed_port()
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = LocalStripe(f"http://127.0.0.1:{port}", process)

    def answers() -> bool:
        try:
            return requests.get(f"{server.url}/v1/balance", auth=(API_KEY, ""), timeout=1).status_code < 500
        except requests.RequestException:
            return process.poll() is not None

    try:
        if not wait_until(answers, timeout=30) or process.poll() is not None:
            raise RuntimeError("localstripe did not start")
        yield server
    finally:
        process.kill()  # it keeps nothing worth a graceful stop
        process.wait(10)


@dataclass
class GatewayProxy:
    """An HTTP proxy in front of the gateway that can fail the way networks do.

    Modes: `pass` forwards; `down` drops each connection unanswered, sending nothing on; `hang`
    holds each request unanswered for `hang_seconds`, sending nothing on; `lose_answer` sends the
    request on (so the gateway acts) and drops the connection instead of answering; `garble_answer`
    sends it on and answers 200 with an HTML page instead of Stripe's answer; `slow_answer`
    sends it on and answers `hang_seconds` later. `only` limits the failure to paths containing it
    (e.g. "/confirm"); other requests pass. `forwarded` lists what reached the gateway.

    localstripe ignores the Idempotency-Key header that Stripe honours; with `replay_idempotent`, a
    POST repeating a key is answered what the first one was, without reaching localstripe, as Stripe
    answers it (requests with one key are expected one after another: Stripe's 409 for two at once
    is not imitated).
    """

    target: str
    url: str = ""
    mode: str = "pass"
    only: str | None = None
    hang_seconds: float = 30.0
    replay_idempotent: bool = False
    answered: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    forwarded: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failing(self, path: str) -> str:
        """The mode that applies to a request for `path`."""
        if self.only is not None and self.only not in path:
            return "pass"
        return self.mode


@contextmanager
def gateway_proxy(target: str) -> Iterator[GatewayProxy]:
    """Serve a GatewayProxy for `target` on a free loopback port."""
    proxy = GatewayProxy(target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with proxy.lock:
                proxy.seen.append((self.command, self.path))
            mode = proxy.failing(self.path)
            if mode == "down":
                self.close_connection = True
                return
            if mode == "hang":
                time.sleep(proxy.hang_seconds)
                self.close_connection = True
                return
            key = self.headers.get("Idempotency-Key") if proxy.replay_idempotent and self.command == "POST" else None
            with proxy.lock:
                first = proxy.answered.get(key) if key else None
            if first is not None:
                self._answer(*first)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = requests.request(self.command, proxy.target + self.path, data=body, headers=headers, timeout=30)
            with proxy.lock:
                proxy.forwarded.append((self.command, self.path))
                if key and answer.status_code < 500:
                    # Stripe keeps the first result of a key unless the server failed.
                    proxy.answered[key] = (answer.status_code, list(answer.headers.items()), answer.content)
            if mode == "slow_answer":
                time.sleep(proxy.hang_seconds)
            if mode == "lose_answer":
                self.close_connection = True
                return
            if mode == "garble_answer":
                garbage = b"<html>upstream proxy error</html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(garbage)))
                self.end_headers()
                self.wfile.write(garbage)
                return
            self._answer(answer.status_code, list(answer.headers.items()), answer.content)

        def _answer(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def do_DELETE(self) -> None:
            self._forward()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
