"""openapi.yaml: a valid OpenAPI 3.1 document that matches the app's routes exactly, served and browsable."""

from __future__ import annotations

import re

import yaml
from flask import Flask, jsonify
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from api.openapi import document, document_text

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def app_routes(app: Flask) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) for every route the app serves."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in rule.methods or () if method not in IGNORED_METHODS}
    return routes


def documented_routes() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {(m.upper(), path) for path, item in document()["paths"].items() for m in item if m in methods}


def undocumented(app: Flask) -> set[tuple[str, str]]:
    return app_routes(app) - documented_routes()


def test_the_document_is_valid_openapi() -> None:
    validate(document())
    assert document()["openapi"].startswith("3.1")


def test_every_route_is_documented_and_every_documented_route_exists(app: Flask) -> None:
    assert undocumented(app) == set()
    assert documented_routes() - app_routes(app) == set()


def test_an_undocumented_route_is_caught(app: Flask) -> None:
    @app.get("/v1/payments/<payment_id>/secret-export")
    def secret_export(payment_id: str) -> object:
        return jsonify({})

    assert undocumented(app) == {("GET", "/v1/payments/{payment_id}/secret-export")}


def test_the_document_is_served_as_json_and_yaml(client: FlaskClient) -> None:
    as_json = client.get("/openapi.json")
    as_yaml = client.get("/openapi.yaml")

    assert as_json.status_code == as_yaml.status_code == 200
    assert as_json.get_json() == document()
    assert yaml.safe_load(as_yaml.get_data(as_text=True)) == document()
    assert as_yaml.get_data(as_text=True) == document_text()


def test_docs_page_loads_its_assets_locally(client: FlaskClient) -> None:
    page = client.get("/docs").get_data(as_text=True)

    assert "https://" not in page and "http://" not in page
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page)
    assert len(assets) == 3
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 1000


def test_every_operation_has_an_id_and_every_v1_operation_the_api_key_schemes() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId"), f"{method} {path}"
            if path.startswith("/v1/"):
                schemes = {name for requirement in operation["security"] for name in requirement}
                assert schemes == {"bearerAuth", "apiKeyHeader"}, f"{method} {path}"
