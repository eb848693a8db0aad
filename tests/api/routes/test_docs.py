"""/docs works wherever the service runs: relative servers, and only the files the page needs."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests
import yaml
from flask.testing import FlaskClient

from api.routes.docs import DOCS_ASSETS


def test_the_served_document_names_no_host_or_port(client: FlaskClient) -> None:
    as_json = client.get("/openapi.json").get_json()
    as_yaml = yaml.safe_load(client.get("/openapi.yaml").get_data(as_text=True))

    for document in (as_json, as_yaml):
        assert document["servers"] == [{"url": "/", "description": "This service"}]
        assert "localhost" not in str(document) and "8082" not in str(document["servers"])


def test_the_docs_page_loads_only_local_files(client: FlaskClient) -> None:
    response = client.get("/docs")
    page = response.get_data(as_text=True)

    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "http://" not in page and "https://" not in page
    assert 'url: "/openapi.json"' in page
    assert "validatorUrl: null" in page  # no badge calling validator.swagger.io
    assets = set(re.findall(r'(?:src|href)="/docs/assets/([^"]+)"', page))
    assert assets == DOCS_ASSETS
    for name in assets:
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and len(asset.data) > 1000


@pytest.mark.parametrize(
    "name",
    [
        "index.html",  # Swagger's stock page, which loads the Petstore from the internet
        "swagger-initializer.js",
        "oauth2-redirect.html",
        "swagger-ui-bundle.js.map",
        "favicon-32x32.png",
        "..%2Fswagger-ui.css",
        "nothing-here.js",
    ],
)
def test_anything_else_under_docs_assets_is_404(client: FlaskClient, name: str) -> None:
    response = client.get(f"/docs/assets/{name}")

    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_nested_paths_under_docs_assets_are_404(client: FlaskClient) -> None:
    response = client.get("/docs/assets/vendor/index.html")

    assert response.status_code == 404


def test_docs_under_gunicorn_on_any_port(serve_gunicorn: Callable[..., str]) -> None:
    url = serve_gunicorn(workers=1, threads=2)

    page = requests.get(f"{url}/docs", timeout=10)
    document = requests.get(f"{url}/openapi.json", timeout=10).json()
    stock_page = requests.get(f"{url}/docs/assets/index.html", timeout=10)

    assert page.status_code == 200 and "swagger-ui" in page.text
    assert document["servers"][0]["url"] == "/"
    assert stock_page.status_code == 404 and stock_page.json()["code"] == "not_found"
    for name in DOCS_ASSETS:
        assert requests.get(f"{url}/docs/assets/{name}", timeout=10).status_code == 200
