"""Payment endpoints under /v1: thin wrappers that parse, call the service and shape the response."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.validation import parse_list_filters
from services.payment_service import PaymentService
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
