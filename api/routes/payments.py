"""Payment endpoints under /v1: thin wrappers that parse, call the service and shape the response."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.routing import BaseConverter

from api.request_body import read_json_object
from api.services import services
from api.validation import (
    parse_authorize_request,
    parse_capture_request,
    parse_charge_request,
    parse_list_filters,
    parse_refund_request,
    parse_void_request,
)
from models.money import format_money
from services.idempotency_service import Outcome
from utils.errors import PaymentNotFoundError
from utils.helpers import in_utc, parse_positive_id, utc_text

bp = Blueprint("payments", __name__, url_prefix="/v1")


class PaymentIdConverter(BaseConverter):
    """Any path segment except `charge` and `authorize`, so those paths belong to their routes alone.

    Non-numeric ids still reach the handlers and get 404 payment_not_found; only those two are kept
    out, so GET /v1/payments/charge is a 405 that advertises POST instead of a puzzling 404.
    """

    regex = r"(?!(?:charge|authorize)$)[^/]+"


@bp.get("/payments")
def list_payments() -> ResponseReturnValue:
    """List payments, newest first, with optional filters and paging."""
    filters = parse_list_filters(request.args)
    return jsonify(services().payments.list_payments(filters).to_json())


@bp.get("/payments/<payment_id:payment_id>")
def get_payment(payment_id: str) -> ResponseReturnValue:
    """Return one payment; a non-numeric id is simply not found."""
    return jsonify(services().payments.get_payment(payment_id_or_404(payment_id)).to_json())


@bp.get("/payments/<payment_id:payment_id>/transactions")
def list_transactions(payment_id: str) -> ResponseReturnValue:
    """The payment's history: every money operation on it, oldest first."""
    return jsonify(services().payments.get_transactions(payment_id_or_404(payment_id)).to_json())


@bp.get("/payments/<payment_id:payment_id>/refunds")
def list_refunds(payment_id: str) -> ResponseReturnValue:
    """The payment's refund records, refused ones included, oldest first."""
    return jsonify(services().payments.get_refunds(payment_id_or_404(payment_id)).to_json())


def payment_id_or_404(text: str) -> int:
    """The path's payment id; text that cannot be one (not a positive 64-bit integer) is simply not found."""
    payment_id = parse_positive_id(text)
    if payment_id is None:
        raise PaymentNotFoundError(None)
    return payment_id


def idempotency_scope(operation: str) -> str:
    """Scope of an idempotency key: the operation, and the client when API keys are on."""
    client = getattr(g, "client_id", None)
    return f"{client}/{operation}" if client else operation


def outcome_response(outcome: Outcome) -> Response:
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
    return outcome_response(services().charges.charge(charge_request, idempotency_scope("charge")))


@bp.post("/payments/authorize")
def authorize() -> ResponseReturnValue:
    """Hold a trip's estimated fare when it is accepted; idempotent by key, as the charge."""
    body = read_json_object(request, allow_empty=False)
    authorize_request = parse_authorize_request(body, request.headers.get("Idempotency-Key"))
    return outcome_response(services().charges.authorize(authorize_request, idempotency_scope("authorize")))


@bp.post("/payments/<payment_id:payment_id>/capture")
def capture(payment_id: str) -> ResponseReturnValue:
    """Capture a hold's final fare (or an explicit amount); idempotent when a key is given."""
    body = read_json_object(request, allow_empty=True)
    capture_request = parse_capture_request(body, request.headers.get("Idempotency-Key"))
    parsed_id = payment_id_or_404(payment_id)
    scope = idempotency_scope(f"capture:{parsed_id}")
    return outcome_response(services().holds.capture(parsed_id, capture_request, scope))


@bp.post("/payments/<payment_id:payment_id>/void")
def void(payment_id: str) -> ResponseReturnValue:
    """Release a hold; idempotent when a key is given."""
    body = read_json_object(request, allow_empty=True)
    void_request = parse_void_request(body, request.headers.get("Idempotency-Key"))
    parsed_id = payment_id_or_404(payment_id)
    scope = idempotency_scope(f"void:{parsed_id}")
    return outcome_response(services().holds.void(parsed_id, void_request, scope))


@bp.post("/payments/<payment_id:payment_id>/refund")
def refund(payment_id: str) -> ResponseReturnValue:
    """Refund part or all of a payment; idempotent when a key is given."""
    body = read_json_object(request, allow_empty=True)
    refund_request = parse_refund_request(body, request.headers.get("Idempotency-Key"))
    parsed_id = payment_id_or_404(payment_id)
    scope = idempotency_scope(f"refund:{parsed_id}")
    return outcome_response(services().refunds.refund(parsed_id, refund_request, scope))


FARE_LABELS = {"TRIP": "Trip fare", "CANCELLATION": "Cancellation fee", "CLIENT_AMOUNT": "Trip fare (agreed amount)"}


def _render_receipt(receipt: dict[str, Any]) -> str:
    """The printable HTML receipt (Jinja escapes every value)."""
    data = receipt["receipt_data"]
    fare = data.get("fare") or {}
    return render_template(
        "receipt.html",
        service_name=current_app.config["SERVICE"].SERVICE_NAME.replace("-", " ").title(),
        receipt=receipt,
        payment=data["payment"],
        refunds=data["refunds"],
        totals=data["totals"],
        hold=data.get("hold"),
        currency=data["currency"],
        rider=data.get("rider"),
        driver=data.get("driver"),
        fare_label=FARE_LABELS.get(fare.get("type"), "Payment"),
        money=functools.partial(format_money, currency=data["currency"]),
        when=_receipt_time,
    )


def _receipt_time(moment: datetime, pattern: str | None = "%d %b %Y, %H:%M UTC") -> str:
    """Every time the page prints, in UTC (`pattern` None: ISO 8601, as the JSON writes it)."""
    return in_utc(moment).isoformat() if pattern is None else utc_text(moment, pattern)


@bp.get("/payments/<payment_id:payment_id>/receipt")
def receipt(payment_id: str) -> ResponseReturnValue:
    """The payment's receipt as JSON, or as a printable page for `Accept: text/html`."""
    parsed_id = payment_id_or_404(payment_id)
    wanted = request.accept_mimetypes.best_match(["application/json", "text/html"])
    html = (
        wanted == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]
    )
    if request.method == "HEAD":
        # HEAD must not have the side effects of GET: it says whether a receipt can be had (200,
        # 404, 409) without issuing it, which would fix its number and notify the rider.
        services().receipts.check_receiptable(parsed_id)
        return Response(status=200, mimetype="text/html" if html else "application/json")
    result = services().receipts.get_receipt(parsed_id).to_json()
    if html:
        return Response(_render_receipt(result), mimetype="text/html")
    return jsonify(result)
