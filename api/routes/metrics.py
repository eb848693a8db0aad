"""GET /metrics (JSON summary) and GET /metrics/prometheus (text exposition for Prometheus)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.metrics_service import MetricsService

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_summary() -> ResponseReturnValue:
    """Payment counts and totals as JSON."""
    service: MetricsService = current_app.extensions["metrics_service"]
    return jsonify(service.summary())


@bp.get("/metrics/prometheus")
def metrics_prometheus() -> ResponseReturnValue:
    """Everything in the Prometheus text format (all workers' counters added up under gunicorn)."""
    registry = current_app.extensions["metrics_registry"]
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
