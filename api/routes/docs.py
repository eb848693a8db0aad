"""The API description: /openapi.json, /openapi.yaml and a Swagger UI at /docs that needs no CDN."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, send_from_directory
from flask.typing import ResponseReturnValue
from swagger_ui_bundle import swagger_ui_path

from api.openapi import document, document_text

bp = Blueprint("docs", __name__)

# Swagger UI's own files come from the swagger-ui-bundle package, so the page works offline. Only the
# three the page loads are served: the package also holds Swagger's stock index.html (which loads the
# Petstore example from the internet), its initializer, OAuth redirect page and source maps.
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"})
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Payment Service API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null
});
</script>
</body>
</html>
"""


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    """The document as JSON."""
    return jsonify(document())


@bp.get("/openapi.yaml")
def openapi_yaml() -> ResponseReturnValue:
    """The document as written."""
    return Response(document_text(), mimetype="application/yaml")


@bp.get("/docs")
def docs() -> ResponseReturnValue:
    """Swagger UI for the document."""
    return Response(DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/assets/<filename>")
def docs_asset(filename: str) -> ResponseReturnValue:
    """One of the Swagger UI files the /docs page loads; anything else is 404."""
    if filename not in DOCS_ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
