"""Logging set-up: JSON lines in production, readable lines in DEBUG, request id on every record."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

_HANDLER_NAME = "payment-service"
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"
# Attributes every LogRecord has (plus those formatting and our filter add): the rest came from `extra=`.
_RECORD_ATTRS = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "request_id", "taskName"]
)
# A value printed bare must not be mistaken for the end of the field or the start of another one.
# Printable text without spaces, quotes, `=` or backslashes goes bare; anything else is quoted with
# every control character escaped, so a value (a request path, say) can never put a terminal
# escape sequence or a NUL into an operator's terminal or log file.
_BARE_VALUE = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f-\x9f]+")
_CONTROL = re.compile(r"[\x7f-\x9f]")


class RequestIdFilter(logging.Filter):
    """Attach the current request's id (or '-') to every record, so each line can be traced."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `request_id` unless the caller already set one."""
        if not hasattr(record, "request_id"):
            record.request_id = _current_request_id()
        return True


class ReadableFormatter(logging.Formatter):
    """The DEBUG format: one plain-text line per record, ending with its `extra=` fields as key=value.

    e.g. `2026-12-01 08:00:11,292 INFO    payment_service.access [req-1] request method=GET path=/live
    status=200 duration_ms=1.2`. Values with spaces, quotes or `=` are double-quoted (JSON string
    escapes), so a line stays one line and splits back into its fields; None shows as `-`.
    """

    def __init__(self) -> None:
        """Use the service's text layout."""
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging.Formatter's name)
        """The layout's line plus the record's structured fields (a traceback, if any, follows)."""
        line = super().formatMessage(record)
        fields = [f"{key}={_readable_value(value)}" for key, value in vars(record).items() if key not in _RECORD_ATTRS]
        return " ".join([line, *fields]) if fields else line


def _readable_value(value: Any) -> str:
    """One field's value for a text line: bare when unambiguous, else a double-quoted JSON string."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    # json.dumps escapes U+0000-U+001F; DEL and the C1 controls are escaped here.
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


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
        handler.setFormatter(ReadableFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's own per-request lines would duplicate our access log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """Return the named logger (configuration is global, done once by the app factory)."""
    return logging.getLogger(name)
