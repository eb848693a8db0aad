"""Payment endpoints under /v1: thin wrappers that parse, call the service and shape the response."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.request_body import read_json_object
from api.validation import parse_charge_request, parse_list_filters
from services.payment_service import ChargeOutcome, PaymentService
from utils.helpers import parse_positive_id

bp = Blueprint("payments", __name__, url_prefix="/v1")


def _payments() -> PaymentService:
    """Return the app's PaymentService."""
    return current_app.extensions["payment_service"]


@bp.get("/payments")
def list_payments() -> ResponseReturnValue:
    """List payments, newest first, with optional filters and paging."""
    filters = parse_list_filters(request.args)
    return jsonify(_payments().list_payments(filters))


@bp.get("/payments/<payment_id>")
def get_payment(payment_id: str) -> ResponseReturnValue:
    """Return one payment; a non-numeric id is simply not found."""
    return jsonify(_payments().get_payment(parse_positive_id(payment_id)))


def idempotency_scope(operation: str) -> str:
    """Scope of an idempotency key: the operation (the client is added once API keys exist)."""
    return operation


def outcome_response(outcome: ChargeOutcome) -> Response:
    """Send the stored body text as is, so a replay is byte-identical to the original answer."""
    response = Response(outcome.body, status=outcome.status_code, mimetype="application/json")
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("/payments/charge")
def charge() -> ResponseReturnValue:
    """Charge a completed (or cancelled) trip; idempotent by key."""
    body = read_json_object(request, allow_empty=False)
    charge_request = parse_charge_request(body, request.headers.get("Idempotency-Key"))
    return outcome_response(_payments().charge(charge_request, idempotency_scope("charge")))
