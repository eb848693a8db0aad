"""GET /metrics (JSON summary) and GET /metrics/prometheus (text exposition for Prometheus)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.services import services

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_summary() -> ResponseReturnValue:
    """Payment counts and totals as JSON."""
    return jsonify(services().metrics.summary())


@bp.get("/metrics/prometheus")
def metrics_prometheus() -> ResponseReturnValue:
    """Everything in the Prometheus text format (all workers' counters added up under gunicorn)."""
    return Response(generate_latest(services().metrics_registry), content_type=CONTENT_TYPE_LATEST)
