"""Checks a response against openapi.yaml: documented status, documented content type, body schema."""

from __future__ import annotations

from functools import cache
from typing import Any

from api.openapi import document, schema_validator


@cache
def _templates() -> list[str]:
    """Documented paths, literal ones first so /v1/payments/charge wins over /v1/payments/{payment_id}."""
    return sorted(document()["paths"], key=lambda p: ("{" in p, p))


def _matches(template: str, path: str) -> bool:
    """Segment by segment; a {name} segment matches any non-empty segment."""
    wanted, actual = template.strip("/").split("/"), path.strip("/").split("/")
    return len(wanted) == len(actual) and all(
        w == a or (w.startswith("{") and w.endswith("}") and a != "") for w, a in zip(wanted, actual, strict=True)
    )


def operation_for(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The documented (template, operation) serving `method path`, or None if the document has none."""
    for template in _templates():
        if _matches(template, path):
            # The first (most literal) match owns the path; without that method it is a 405 by design.
            item = document()["paths"][template]
            return (template, item[method.lower()]) if method.lower() in item else None
    return None


def check_response(method: str, path: str, status: int, mimetype: str, body: Any) -> list[str]:
    """Problems with a response (empty when it matches the document); undocumented paths are not judged."""
    found = operation_for(method, path)
    if found is None:
        return []
    template, operation = found
    responses = operation["responses"]
    key = str(status) if str(status) in responses else "default" if "default" in responses else None
    if key is None:
        return [f"{method} {template}: status {status} is not documented"]
    response = responses[key]
    if "$ref" in response:
        response = document()["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    content = response.get("content", {})
    if not content:
        return []
    if mimetype not in content and "*/*" not in content:
        return [f"{method} {template} {status}: content type {mimetype} is not documented ({', '.join(content)})"]
    if mimetype != "application/json":
        return []
    escaped = template.replace("~", "~0").replace("/", "~1")
    if "$ref" in responses[key]:
        name = responses[key]["$ref"].rsplit("/", 1)[-1]
        pointer = f"/components/responses/{name}/content/application~1json/schema"
    else:
        pointer = f"/paths/{escaped}/{method.lower()}/responses/{key}/content/application~1json/schema"
    errors = sorted(schema_validator(pointer).iter_errors(body), key=lambda e: list(e.absolute_path))
    return [f"{method} {template} {status}: {e.message} at {list(e.absolute_path)}" for e in errors[:3]]
