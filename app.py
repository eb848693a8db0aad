"""Application factory and entry point of the payment service.

`gunicorn app:app` serves the module-level `app`; `python app.py` runs a development server.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api import services as api_services
from api.middleware.auth import register_auth
from api.middleware.error_handlers import register_error_handlers
from api.middleware.rate_limiter import RateLimiter, register_rate_limiter
from api.middleware.request_context import register_request_context
from api.routes import docs, health, metrics, payments
from config import Config, ConfigError, load_environment
from services.container import build_services, close_services, start_background
from utils.helpers import PaymentJSONProvider
from utils.logger import configure_logging, get_logger

logger = get_logger(__name__)


def create_app(overrides: Mapping[str, Any] | None = None, config: Config | None = None) -> Flask:
    """Build a configured app: settings, logging, the service graph, middleware and routes."""
    settings = (config or Config.from_env()).with_overrides(overrides)
    configure_logging(settings.LOG_LEVEL, json_lines=settings.LOG_FORMAT == "json" and not settings.DEBUG)

    app = Flask(__name__)
    app.json = PaymentJSONProvider(app)
    app.config.update(
        SERVICE=settings,
        # DEBUG only makes logs readable: Flask's debug mode would change error handling.
        DEBUG=False,
        TESTING=settings.TESTING,
        MAX_CONTENT_LENGTH=settings.MAX_CONTENT_LENGTH,
    )
    graph = build_services(settings)
    app.extensions[api_services.EXTENSION] = graph
    start_background(graph)

    if settings.TRUSTED_PROXY_COUNT:
        # Only behind that many trusted proxies is X-Forwarded-For believed for the client address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.TRUSTED_PROXY_COUNT)  # type: ignore[method-assign]
    # Order matters: request id first, then authentication, then rate limiting (per client).
    register_request_context(app)
    register_auth(app)
    register_rate_limiter(app, RateLimiter(settings))
    register_error_handlers(app)
    app.url_map.converters["payment_id"] = payments.PaymentIdConverter
    for blueprint in (health.bp, payments.bp, metrics.bp, docs.bp):
        app.register_blueprint(blueprint)

    if settings.TRIP_SERVICE_MOCK:
        logger.warning(
            "TRIP_SERVICE_MOCK=true: when the trip service cannot answer, charges price a MOCK trip"
            " (10.5 km, marked mock_trip in the fare); never use this in production"
        )
    logger.info(
        "payment service configured",
        extra={"database": settings.describe_database(), "pool_size": settings.DB_POOL_SIZE},
    )
    return app


def close_app(app: Flask) -> None:
    """Release what create_app opened: database connections and background threads."""
    close_services(api_services.services(app))


def _app_from_environment() -> Flask:
    """Create the app from the environment, or exit 2 printing each configuration problem on its own line."""
    try:
        return create_app()
    except ConfigError as exc:
        sys.stderr.write("".join(f"{line}\n" for line in exc.lines()))
        raise SystemExit(2) from None


# Under gunicorn the ConfigError itself propagates from `app:app`: a worker that fails to import its
# app exits with WORKER_BOOT_ERROR and the master then stops, instead of booting workers forever as
# it does after a worker's plain exit(2). gunicorn.conf.py checks the settings before any worker.
_shared_app = functools.cache(create_app)


def __getattr__(name: str) -> Flask:
    """Build the module-level `app` on first access, so importing create_app has no side effects."""
    if name == "app":
        return _shared_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    # The development server (what `make run` starts) logs readable lines unless LOG_FORMAT is set in
    # the environment or .env; gunicorn (the image, compose, Kubernetes) keeps the JSON default.
    if "LOG_FORMAT" not in load_environment():
        os.environ["LOG_FORMAT"] = "text"
    application = _app_from_environment()
    settings: Config = application.config["SERVICE"]
    # Never Werkzeug's interactive debugger (it executes code sent to it), whatever DEBUG says.
    application.run(host="0.0.0.0", port=settings.SERVICE_PORT, debug=False, threaded=True, use_reloader=False)
