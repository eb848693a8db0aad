"""Every error leaves as the contract's JSON: 400/404/405/413/415/500 and X-Request-ID on all."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient

from utils.errors import AppError


@pytest.fixture
def probe_app(app: Flask) -> Flask:
    """The real app plus two routes that exercise body parsing and an unexpected crash."""

    @app.post("/_probe/json")
    def echo_json() -> object:
        return jsonify(request.get_json())

    @app.get("/_probe/crash")
    def crash() -> object:
        raise RuntimeError("secret internal detail")

    return app


def _assert_error_shape(body: dict, status: int, code: str) -> None:
    assert body["status_code"] == status
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]


def test_unknown_route_is_404_not_found(client: FlaskClient) -> None:
    response = client.get("/v2/whatever")

    assert response.status_code == 404
    assert response.is_json
    _assert_error_shape(response.get_json(), 404, "not_found")


def test_wrong_verb_is_405_with_allow_header(client: FlaskClient) -> None:
    response = client.delete("/v1/payments")

    assert response.status_code == 405
    _assert_error_shape(response.get_json(), 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_body_over_64_kib_is_413(probe_app: Flask) -> None:
    response = probe_app.test_client().post(
        "/_probe/json", data=b'{"a":"' + b"x" * 70_000 + b'"}', content_type="application/json"
    )

    assert response.status_code == 413
    _assert_error_shape(response.get_json(), 413, "payload_too_large")


def test_wrong_content_type_is_415(probe_app: Flask) -> None:
    response = probe_app.test_client().post("/_probe/json", data="a=1", content_type="text/plain")

    assert response.status_code == 415
    _assert_error_shape(response.get_json(), 415, "unsupported_media_type")


def test_malformed_json_is_400(probe_app: Flask) -> None:
    response = probe_app.test_client().post("/_probe/json", data="{not json", content_type="application/json")

    assert response.status_code == 400
    _assert_error_shape(response.get_json(), 400, "bad_request")


def test_unexpected_exception_is_500_without_details_and_is_logged(
    probe_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = probe_app.test_client().get("/_probe/crash")

    assert response.status_code == 500
    body = response.get_json()
    _assert_error_shape(body, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert any(record.exc_info for record in caplog.records)


def test_app_error_details_and_headers_reach_the_client(app: Flask) -> None:
    @app.get("/_probe/busy")
    def busy() -> object:
        error = AppError("Try later.", status_code=409, code="idempotency_key_in_use", payment_id=3)
        error.headers["Retry-After"] = "1"
        raise error

    response = app.test_client().get("/_probe/busy")

    assert response.status_code == 409
    assert response.get_json() == {
        "error": "Try later.",
        "code": "idempotency_key_in_use",
        "status_code": 409,
        "payment_id": 3,
    }
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("path", ["/", "/live", "/v1/payments", "/v1/payments/1", "/nope"])
def test_every_response_carries_a_generated_request_id(client: FlaskClient, path: str) -> None:
    response = client.get(path)

    assert len(response.headers["X-Request-ID"]) == 32


def test_a_callers_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/v1/payments", headers={"X-Request-ID": "trip-svc.abc-123"})

    assert response.headers["X-Request-ID"] == "trip-svc.abc-123"


def test_an_unsafe_request_id_is_replaced(client: FlaskClient) -> None:
    response = client.get("/live", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})

    assert response.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(response.headers["X-Request-ID"]) == 32
