"""Service info and the probes: GET /, /health, /ready, /live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.services import services
from services.health_service import HealthService
from utils.helpers import route_template

bp = Blueprint("health", __name__)


def _health_service() -> HealthService:
    """Return the app's HealthService."""
    return services().health


def _now() -> str:
    """Current UTC time in ISO 8601 with offset."""
    return datetime.now(UTC).isoformat()


def _endpoint_index() -> dict[str, str]:
    """Describe every route of the app, read from the URL map so it cannot drift."""
    index: dict[str, str] = {}
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        methods = ",".join(sorted(m for m in rule.methods or () if m not in ("HEAD", "OPTIONS")))
        index[rule.endpoint.split(".")[-1]] = f"{methods} {route_template(rule.rule)}"
    return index


@bp.get("/")
def service_info() -> ResponseReturnValue:
    """Name, version and the endpoints this instance serves."""
    config = current_app.config["SERVICE"]
    body: dict[str, Any] = {
        "service": config.SERVICE_NAME,
        "version": config.VERSION,
        "status": "running",
        "timestamp": _now(),
        "endpoints": _endpoint_index(),
    }
    return jsonify(body)


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Database status decides the answer; dependencies are reported but never change it."""
    config = current_app.config["SERVICE"]
    service = _health_service()
    database_up = service.database_up()
    body = {
        "service": config.SERVICE_NAME,
        "version": config.VERSION,
        "status": "UP" if database_up else "DEGRADED",
        "timestamp": _now(),
        "database_status": "UP" if database_up else "DOWN",
        "dependencies": service.dependencies.statuses(),
    }
    return jsonify(body), 200 if database_up else 503


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    """Ready when the database is reachable and its schema is current."""
    is_ready = _health_service().ready()
    return jsonify({"ready": is_ready}), 200 if is_ready else 503


@bp.get("/live")
def live() -> ResponseReturnValue:
    """The process is up and serving; says nothing about the database."""
    return jsonify({"alive": True})
