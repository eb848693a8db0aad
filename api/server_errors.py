"""JSON error bodies for the requests gunicorn refuses itself, before the application sees them.

An over-long request line (414), too many or too large header fields (431), a malformed request
line, header or chunked body (400) are answered by gunicorn's worker, which writes its own HTML
page (`Worker.handle_error` -> `util.write_error`). The workers here answer the same requests with
the contract's error body instead, `{"error", "code", "status_code"}` as `application/json` with
an `X-Request-ID`, and never with a 5xx for anything a client sent.

`gunicorn.conf.py` selects `JsonErrorWorker`, which becomes a sync worker for one thread and a
gthread worker for more (as gunicorn itself turns `sync` into `gthread` when `--threads` > 1, so a
`--threads` on the command line still picks the right one).

They also bound how long a client may take to send a request (`RequestReadTimeoutError`): gunicorn's
threads read a request's headers and body with blocking reads and no deadline, so a client that
sent part of a request and stalled (or sent one byte now and then) held a thread for as long as it
liked, and a dozen such clients held them all. A request's reads now share one deadline; past it
the client gets a 408 and its connection is closed.

gunicorn imports this module in the master before any hook runs, so it imports only gunicorn and
the standard library: pulling in the app's metrics here would register them before
`PROMETHEUS_MULTIPROC_DIR` is set.
"""

from __future__ import annotations

import errno
import json
import math
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import TConn, ThreadWorker
from gunicorn.workers.sync import SyncWorker

# The caller's request id is echoed only if it is short and printable (as the app does).
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# A header name is repeated in a message only when it is a plain, short token.
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")

REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


@dataclass(frozen=True)
class ServerError:
    """What to answer: status, stable code and a human sentence."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        """The contract's JSON error body."""
        payload = {"error": self.message, "code": self.code, "status_code": self.status}
        return json.dumps(payload, separators=(",", ":")).encode()

    def http_response(self, request_id: str) -> bytes:
        """A complete HTTP/1.1 response that closes the connection."""
        body = self.body()
        head = (
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}\r\n"
            f"Date: {util.http_date()}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\n"
            "\r\n"
        )
        return head.encode("latin-1") + body


INTERNAL_ERROR = ServerError(500, "internal_error", "Internal server error.")
# Seconds a client has to send a request's headers and body, from its first byte (GUNICORN_REQUEST_READ_TIMEOUT).
DEFAULT_REQUEST_READ_TIMEOUT = 5.0


class RequestReadTimeoutError(Exception):
    """The client did not send the request's headers and body within the read deadline.

    Not an OSError: gunicorn's thread worker takes those for a broken socket and answers nothing.
    """

    def __init__(self, seconds: float) -> None:
        """Remember the deadline, for the message."""
        super().__init__(f"request not received within {seconds:g} s")
        self.seconds = seconds


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader, with one deadline for all the reads of a request.

    A timeout per read alone would not do: a client sending one byte every few seconds never trips
    it. The deadline starts at the request's first read (`start`), so time spent idle between
    keep-alive requests, waiting in gunicorn's poller, does not count.
    """

    def __init__(self, sock: Any, seconds: float, max_chunk: int = 8192) -> None:
        """Read from `sock`; each request may take `seconds` to arrive."""
        super().__init__(sock, max_chunk)
        self.seconds = seconds
        self.deadline: float | None = None

    def start(self) -> None:
        """A new request: its deadline starts at its first read."""
        self.deadline = None

    def chunk(self, size_hint: int | None = None) -> bytes:
        """One read from the socket, raising RequestReadTimeoutError once the request's time is up."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.seconds
        remaining = self.deadline - now
        if remaining <= 0:
            raise RequestReadTimeoutError(self.seconds)
        # A caller's own, shorter timeout (gunicorn's bounded body drain) still applies.
        previous = self.sock.gettimeout()
        self.sock.settimeout(min(remaining, previous if previous is not None else math.inf))
        try:
            return super().chunk(size_hint)
        except TimeoutError:
            raise RequestReadTimeoutError(self.seconds) from None
        finally:
            self.sock.settimeout(previous)


# Body framing errors, as gunicorn raises them while reading a chunked body.
UNREAD_BODY_ERRORS = (
    http_errors.InvalidChunkSize,
    http_errors.ChunkMissingTerminator,
    http_errors.InvalidChunkExtension,
)


def _limit(value: Any) -> int | None:
    """A positive configured limit, or None when the setting means 'gunicorn's own maximum'."""
    return value if isinstance(value, int) and value > 0 else None


def _header_name(exc: Exception) -> str | None:
    """The header an InvalidHeader names, when it is a plain token worth repeating."""
    name = getattr(exc, "hdr", None)
    if isinstance(name, str) and _HEADER_NAME_RE.match(name):
        return "-".join(part.capitalize() for part in name.split("-"))
    return None


def _too_large_headers(exc: http_errors.LimitRequestHeaders, cfg: Any) -> str:
    """Which header limit was crossed, in plain words."""
    kind = str(getattr(exc, "msg", ""))
    fields = _limit(getattr(cfg, "limit_request_fields", None))
    size = _limit(getattr(cfg, "limit_request_field_size", None))
    if kind == "limit request headers fields":
        at_most = f" (at most {fields})" if fields else ""
        return f"The request has more header fields than the server accepts{at_most}."
    if kind == "limit request headers fields size":
        at_most = f" (at most {size} bytes each)" if size else ""
        return f"A request header field is longer than the server accepts{at_most}."
    return "The request's header fields are too many or too large for the server."


def describe(exc: BaseException, cfg: Any = None) -> ServerError:
    """The JSON error for an exception gunicorn's worker caught while reading or answering a request.

    Anything the client sent is a 4xx (the contract allows no 5xx for any input; an unknown
    transfer coding is a 400 rather than RFC 9112's suggested 501). Only a failure of the server
    or the application itself is a 500.
    """
    errors = http_errors
    if isinstance(exc, RequestReadTimeoutError):
        message = f"The request was not received in time: send its headers and body within {exc.seconds:g} s."
        return ServerError(408, "request_timeout", message)
    if isinstance(exc, (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)):
        return INTERNAL_ERROR  # a header the application tried to send: the server's fault
    if isinstance(exc, errors.LimitRequestLine):
        line = _limit(getattr(cfg, "limit_request_line", None))
        at_most = f" ({line} bytes)" if line else ""
        return ServerError(
            414,
            "uri_too_long",
            f"The request line (method, path and query string) is longer than the server accepts{at_most}.",
        )
    if isinstance(exc, errors.LimitRequestHeaders):
        return ServerError(431, "request_header_fields_too_large", _too_large_headers(exc, cfg))
    if isinstance(exc, errors.InvalidRequestLine):
        message = "The request line is malformed; expected a method, a path and HTTP/1.1, e.g. 'GET /health HTTP/1.1'."
        return ServerError(400, "bad_request", message)
    if isinstance(exc, errors.InvalidRequestMethod):
        return ServerError(400, "bad_request", "The request method is not a valid HTTP method.")
    if isinstance(exc, errors.InvalidHTTPVersion):
        return ServerError(400, "bad_request", "The HTTP version is not supported; use HTTP/1.1 or HTTP/1.0.")
    if isinstance(exc, errors.InvalidHeaderName):
        return ServerError(400, "bad_request", "A request header has an invalid name.")
    if isinstance(exc, errors.InvalidHeader):
        name = _header_name(exc)
        message = f"The {name} header is invalid." if name else "A request header is malformed."
        return ServerError(400, "bad_request", message)
    if isinstance(exc, errors.ObsoleteFolding):
        return ServerError(400, "bad_request", "Header values continued on the next line are not accepted.")
    if isinstance(exc, errors.UnsupportedTransferCoding):
        return ServerError(
            400, "bad_request", "Transfer-Encoding must be chunked; other transfer codings are not supported."
        )
    if isinstance(exc, UNREAD_BODY_ERRORS):
        return ServerError(400, "bad_request", "The chunked request body is malformed.")
    if isinstance(exc, errors.ExpectationFailed):
        return ServerError(417, "expectation_failed", "The only Expect value supported is 100-continue.")
    if isinstance(exc, errors.ForbiddenProxyRequest):
        return ServerError(403, "forbidden", "This address may not send PROXY protocol requests.")
    if isinstance(exc, (errors.InvalidProxyLine, errors.InvalidProxyHeader)):
        return ServerError(400, "bad_request", "The PROXY protocol header is malformed.")
    if isinstance(exc, errors.InvalidSchemeHeaders):
        return ServerError(400, "bad_request", "The request's forwarded-protocol headers contradict each other.")
    if isinstance(exc, errors.ConfigurationProblem):
        # Raised for a path outside SCRIPT_NAME: nothing is served there.
        return ServerError(404, "not_found", "No such endpoint.")
    if isinstance(exc, (errors.ParseException, ssl.SSLError)):
        return ServerError(400, "bad_request", "The request is malformed.")
    return INTERNAL_ERROR


def _request_id(req: Any) -> str:
    """The caller's X-Request-ID when the headers were read and it is acceptable, else a new one."""
    for name, value in getattr(req, "headers", None) or ():
        if name == "X-REQUEST-ID" and isinstance(value, str) and _REQUEST_ID_RE.match(value):
            return value
    return uuid.uuid4().hex


class JsonErrorsMixin:
    """Replaces `Worker.handle_error`: the same logging, a JSON body instead of an HTML page."""

    cfg: Any
    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Log like gunicorn does, then write the JSON error and let the worker close the connection."""
        error = describe(exc, self.cfg)
        if error is INTERNAL_ERROR:
            described = f"{getattr(req, 'method', '')} {getattr(req, 'uri', '')}".strip() or "(no URI read)"
            self.log.exception("Error handling request %s", described)
        else:
            ip = (addr or ("", -1))[0]
            self.log.warning("Invalid request from ip=%s: %s (%s %s)", ip, exc, error.status, error.code)
        req = req if req is not None else getattr(exc, "req", None)
        try:
            util.write_nonblock(client, error.http_response(_request_id(req)))
        except Exception:
            self.log.debug("Failed to send error message.")


class JsonErrorSyncWorker(JsonErrorsMixin, SyncWorker):
    """gunicorn's sync worker (one request at a time) with JSON error pages."""


def closing_after_unread_bodies(app: Any) -> Any:
    """Wrap the WSGI app so a 413 or 408 answer closes its connection, and says so (`Connection: close`).

    A 413 is sent before the body is read; gunicorn then drains the unread body only within its
    data timeout, and closes the connection when it cannot, after its response had announced
    keep-alive: a pooled client then lost its next request on that connection. gunicorn's
    `start_response` belongs to its response object, whose `force_close()` makes the answer say
    `Connection: close` and the worker close it. A 408 (the body did not arrive in time) leaves an
    unread body behind just the same.
    """

    def app_closing_after_413(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            responder = getattr(start_response, "__self__", None)
            if status.startswith(("413", "408")) and hasattr(responder, "force_close"):
                responder.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return app_closing_after_413


class DeadlineConn(TConn):
    """gunicorn's connection, whose HTTP/1 requests are read under the request read deadline."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, read_timeout: float) -> None:
        """The connection gunicorn makes, plus the seconds each request has to arrive."""
        super().__init__(cfg, sock, client, server)
        self.read_timeout = read_timeout

    def init(self) -> None:
        """Set up the connection as gunicorn does, then read its requests through a DeadlineUnreader."""
        if self.initialized:
            return
        super().init()
        if isinstance(self.parser, RequestParser) and isinstance(self.parser.unreader, SocketUnreader):
            unreader = DeadlineUnreader(self.parser.unreader.sock, self.read_timeout, self.parser.unreader.mxchunk)
            unreader.unread(self.parser.unreader.take_buffered())
            self.parser.unreader = unreader


class JsonErrorThreadWorker(JsonErrorsMixin, ThreadWorker):
    """gunicorn's gthread worker with JSON error pages and a deadline for reading each request."""

    # Set from gunicorn.conf.py (GUNICORN_REQUEST_READ_TIMEOUT) by its post_fork hook.
    request_read_timeout = DEFAULT_REQUEST_READ_TIMEOUT

    def load_wsgi(self) -> None:
        """Load the app as gunicorn does, wrapped so a 413 closes its connection."""
        super().load_wsgi()
        self.wsgi = closing_after_unread_bodies(self.wsgi)

    def accept(self, listener: Any) -> None:
        """Accept as gunicorn does, making a DeadlineConn of each connection."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client_sock.setblocking(True)
        conn = DeadlineConn(self.cfg, client_sock, client_addr, listener.getsockname(), self.request_read_timeout)
        self.enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        """Serve one request of the connection; its reads get a fresh deadline."""
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, DeadlineUnreader):
            unreader.start()
        return super().handle(conn)

    def _keepalive_after(self, conn: Any, keepalive: bool) -> bool:
        """Keep the connection only if the unread body of the answered request drains cleanly (and in time).

        gunicorn (the pinned version) discards that body here, after the application answered
        without reading it (404, 405, 429). A malformed body then raised into handle_error, which
        wrote a second answer on the same connection, one the client would take as the answer to
        its next request. The request has its answer: close the connection instead. The same for a
        body that does not arrive before the request's read deadline.
        """
        try:
            return super()._keepalive_after(conn, keepalive)
        except UNREAD_BODY_ERRORS as exc:
            self.log.info("Closing the connection: the unread body of the answered request is malformed (%s)", exc)
            return False
        except RequestReadTimeoutError as exc:
            self.log.info("Closing the connection: the unread body of the answered request is late (%s)", exc)
            return False


class JsonErrorWorker:
    """The worker class to configure: a sync worker for `threads` = 1, a gthread worker above.

    gunicorn instantiates the configured class with its config; this one hands back an instance of
    the right worker instead (mirroring gunicorn's own sync -> gthread switch).
    """

    def __new__(cls, age: Any, ppid: Any, sockets: Any, app: Any, timeout: Any, cfg: Any, log: Any) -> Worker:
        """Build the sync or gthread JSON-error worker for this configuration."""
        worker_class = pick(cfg.threads)
        return worker_class(age, ppid, sockets, app, timeout, cfg, log)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """The chosen worker's own configuration check (gthread warns about worker_connections)."""
        chosen = pick(cfg.threads)
        if hasattr(chosen, "check_config"):
            chosen.check_config(cfg, log)


def pick(threads: int) -> type[Worker]:
    """The JSON-error worker class for this many threads."""
    return JsonErrorThreadWorker if threads > 1 else JsonErrorSyncWorker
