"""gunicorn settings for the payment service: `gunicorn -c gunicorn.conf.py app:app`.

Every value can be changed through the environment; the defaults suit a 2-core machine.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import sys
import tempfile
from typing import Any

from gunicorn.glogging import Logger

# Problems with the GUNICORN_* variables below: reported together, one line each, exit 2, as the
# service's own settings are (gunicorn would otherwise print a traceback, or start with 0 workers).
_problems: list[str] = []


def _number(name: str, default: str, low: float, kind: type = int) -> Any:
    """The variable `name` read as `kind` (int or float), at least `low`; the default when unset or blank."""
    text = os.environ.get(name, "").strip() or default
    try:
        value = kind(text)
    except ValueError:
        _problems.append(f"{name} must be a {'whole number' if kind is int else 'number'}, got {text!r}")
        return kind(default)
    if not low <= value < float("inf"):  # also refuses NaN
        _problems.append(f"{name} must be at least {low:g}, got {text}")
        return kind(default)
    return value


bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('SERVICE_PORT', '8082')}"
workers = _number("GUNICORN_WORKERS", "2", 1)
# Threads let a worker overlap waits on the database and the trip service.
threads = _number("GUNICORN_THREADS", "4", 1)
# gunicorn's sync worker for one thread, gthread for more, both answering the requests gunicorn refuses
# itself (request line or headers too long, malformed request) with the JSON error body rather than
# an HTML page. The class picks sync or gthread from the final `threads`, --threads included.
worker_class = "api.server_errors.JsonErrorWorker"
timeout = _number("GUNICORN_TIMEOUT", "30", 1)
graceful_timeout = _number("GUNICORN_GRACEFUL_TIMEOUT", "20", 0)
keepalive = _number("GUNICORN_KEEPALIVE", "5", 0)
# Connections a gthread worker holds at once (keep-alive included). gunicorn's default, 1000, lets
# whichever worker wakes first take every connection of a burst: 16 keep-alive clients were seen
# split 16/0 or 12/4 between 2 workers, halving throughput behind one worker's GIL. Twice the
# threads keeps each worker's queue short and sends further connections to the other worker; a
# worker keeps at most (connections - threads) idle keep-alive connections and closes the rest
# after their response, so a waiting client gets a slot within one request's time.
worker_connections = _number("GUNICORN_WORKER_CONNECTIONS", str(2 * threads), 1)
# Seconds a client has to send a request's headers and body, counted from its first byte (for a
# kept-alive connection, from the first byte of each request). gunicorn's threads read requests
# with blocking reads and no deadline of their own: a client that sends part of a request and
# stalls, or one byte now and then, held a thread for as long as it liked, and a dozen of them held
# every thread. Past this deadline the client gets a 408 and its connection is closed, so a slow
# client holds a thread for at most this long. Behind the front door (deploy/k8s/front-door.conf.template), which
# buffers whole requests first, no request comes near it.
# 0 would answer every request 408 before reading it; there is no "off" (a large value is one).
request_read_timeout = _number("GUNICORN_REQUEST_READ_TIMEOUT", "5", 0.001, float)
if _problems:
    sys.stderr.write("".join(f"configuration error: {problem}\n" for problem in _problems))
    raise SystemExit(2)
# The app writes its own JSON access line per request; gunicorn's would repeat it in another format.
accesslog = None


class NoAccessLogLogger(Logger):
    """gunicorn's logger with its access log switched off for good."""

    # With logconfig_dict set (below), gunicorn assumes an access log might be configured and
    # formats every request's log atoms only to drop them: 17% of a worker's time on GET /live.
    access_log_enabled = False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Write nothing: the app's own access line covers every request."""


logger_class = NoAccessLogLogger
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# gunicorn's own lines (start, worker exits, timeouts) as JSON too, in the app's field names.
_text_logs = os.environ.get("LOG_FORMAT", "").strip().lower() == "text" or os.environ.get(
    "DEBUG", ""
).strip().lower() in ("1", "true", "yes", "on")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
        "text": {"()": "utils.logger.ReadableFormatter"},
    },
    "filters": {"request_id": {"()": "utils.logger.RequestIdFilter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            # The service's own LOG_FORMAT (or DEBUG), so gunicorn's lines look like the app's.
            "formatter": "text" if _text_logs else "json",
            "filters": ["request_id"],
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {"gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False}},
    # The app installs its own root handler when it starts; one here would print its lines twice.
    "root": {"level": "INFO", "handlers": []},
}
# gunicorn 27 opens ~/.gunicorn/gunicorn.ctl by default; several instances on one host would clash.
control_socket_disable = True


# The metrics directory on_starting made itself (if any), for on_exit to remove.
_made: dict[str, str] = {}


def on_starting(server: Any) -> None:
    """Refuse invalid or unsafe settings, then give prometheus_client a fresh multiprocess directory.

    Both happen in the master before any worker starts: a worker that found a configuration error
    would exit, and the master would boot another in its place, forever.
    """
    check_settings()
    follow_threads(server)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        # Our own directory for this master; removed again in on_exit.
        path = tempfile.mkdtemp(prefix="payment-service-metrics-")
        _made["metrics_dir"] = path
    os.makedirs(path, exist_ok=True)
    # Files left by an earlier run would add old counts to the new ones. Only prometheus_client's
    # own *.db files are removed, whatever directory the variable names.
    for leftover in glob.glob(os.path.join(path, "*.db")):
        os.remove(leftover)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def follow_threads(server: Any) -> None:
    """Keep worker_connections at twice the threads when `--threads` on the command line changed them.

    The value above is computed from GUNICORN_THREADS when this file is read; a `--threads 24` given
    on the command line then left each worker 8 connections for 24 threads, so a burst of new
    connections waited in the listen queue behind busy kept-alive ones (seen in fault scenario 5: a
    read held 6 s, the whole lock, instead of getting its 503 after the pool timeout).
    """
    if "GUNICORN_WORKER_CONNECTIONS" not in os.environ and server is not None:
        server.cfg.set("worker_connections", 2 * server.cfg.threads)


def check_settings() -> None:
    """Exit 2 with one line per configuration problem (the service's own check, as `python app.py` does)."""
    from config import Config, ConfigError

    try:
        Config.from_env()
    except ConfigError as exc:
        sys.stderr.write("".join(f"{line}\n" for line in exc.lines()))
        sys.stderr.flush()
        raise SystemExit(2) from None


def on_exit(server: Any) -> None:
    """Remove the metrics directory if on_starting made it (never one the operator named)."""
    if "metrics_dir" in _made:
        shutil.rmtree(_made.pop("metrics_dir"), ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus_client a worker is gone, so its live gauges stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Move everything the worker built at start-up (modules, app, validators) out of the collector's reach.

    A full (generation 2) collection walks every live object: with the app loaded, ~67,000 of them,
    measured at 73-80 ms in a worker serving 100-row pages, once every few seconds under load; each
    one stalls every request of that worker, which is where the list's p99 tail came from. Frozen,
    those objects are never scanned again (they live as long as the worker anyway): the same
    collection took 2 ms.
    """
    gc.collect()
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """Give the worker its request read deadline (gunicorn has no setting of that name to carry it)."""
    if hasattr(worker, "request_read_timeout"):
        worker.request_read_timeout = request_read_timeout


def worker_exit(server: Any, worker: Any) -> None:
    """Stop the worker's notification dispatcher cleanly, letting a send in progress finish."""
    app = getattr(worker, "wsgi", None)
    graph = getattr(app, "extensions", {}).get("payment_services")
    if graph is not None:
        graph.dispatcher.stop()
