"""Request id propagation and one access-log line per request."""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, Response, g, request

from utils.helpers import route_template
from utils.logger import get_logger
from utils.metrics import HTTP_DURATION, HTTP_REQUESTS

access_logger = get_logger("payment_service.access")

# A caller's id is echoed only if it is short and printable, so it cannot inject into logs or headers.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Metric labels take the method from this fixed set: anyone can send any token as a method, and each
# new label value would be a new time series kept until the process exits.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "OTHER"


def _begin_request() -> None:
    """Adopt the caller's X-Request-ID or make one, and start the clock."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    """Stamp X-Request-ID on the response and write the access line."""
    request_id = getattr(g, "request_id", None) or uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    started = getattr(g, "request_started", None)
    elapsed = time.perf_counter() - started if started is not None else None
    duration_ms = round(elapsed * 1000, 2) if elapsed is not None else None
    # The route template (/v1/payments/<payment_id>), never the raw path, keeps label values bounded.
    endpoint = route_template(request.url_rule.rule) if request.url_rule is not None else "<unmatched>"
    method = request.method if request.method in HTTP_METHODS else OTHER_METHOD
    HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
    if elapsed is not None:
        HTTP_DURATION.labels(method, endpoint).observe(elapsed)
    access_logger.info(
        "request",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "client": getattr(g, "client_id", None),
        },
    )
    return response


def register_request_context(app: Flask) -> None:
    """Install the hooks on the app."""
    app.before_request(_begin_request)
    app.after_request(_finish_request)
