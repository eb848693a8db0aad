"""Logging set-up: JSON lines in production, readable lines in DEBUG, request id on every record."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "payment-service"
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Attach the current request's id (or '-') to every record, so each line can be traced."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `request_id` unless the caller already set one."""
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id()
        return True


def _current_request_id() -> str:
    """Return the id of the request being served, or '-' outside a request."""
    # Imported lazily: logging is configured before any Flask app exists.
    from flask import g, has_request_context

    if has_request_context():
        return getattr(g, "request_id", "-")
    return "-"


def configure_logging(level: str = "INFO", json_lines: bool = True, stream: TextIO | None = None) -> None:
    """Install one stdout handler on the root logger; calling it again replaces it rather than adding one."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                ["levelname", "name", "message", "request_id"],
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's own per-request lines would duplicate our access log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """Return the named logger (configuration is global, done once by the app factory)."""
    return logging.getLogger(name)
