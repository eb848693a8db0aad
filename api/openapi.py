"""The OpenAPI document (openapi.yaml): loaded once, served, and used to validate request bodies.

Request bodies are checked against the document's own schemas before the typed parsing in
api/validation.py, so what the document promises and what the service accepts cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from utils.errors import ValidationError

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
DOCUMENT_URI = "urn:payment-service:openapi"
MAX_DETAIL = 120


@functools.cache
def document_text() -> str:
    """openapi.yaml as written."""
    return DOCUMENT_PATH.read_text()


@functools.cache
def document() -> dict[str, Any]:
    """openapi.yaml parsed (YAML anchors expanded)."""
    return yaml.safe_load(document_text())


def _exact(value: Any) -> Decimal:
    """A JSON number as the exact decimal it was written as (0.01 is not a binary float)."""
    return Decimal(str(value))


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: dict[str, Any]) -> Iterator[SchemaError]:
    """Check multipleOf in exact decimals; a number too large to divide is simply not a multiple."""
    if not validator.is_type(instance, "number"):
        return
    try:
        exact = _exact(instance) % _exact(divisor) == 0
    except (InvalidOperation, ValueError):
        exact = False
    if not exact:
        yield SchemaError(f"{instance} is not a multiple of {divisor}")


def _bound(compare: Callable[[Decimal, Decimal], bool], words: str) -> Callable[..., Iterator[SchemaError]]:
    """A minimum/maximum keyword compared in exact decimals (99999999.99 must not exceed 99999999.99)."""

    def check(validator: Any, bound: Any, instance: Any, schema: dict[str, Any]) -> Iterator[SchemaError]:
        if validator.is_type(instance, "number") and not compare(_exact(instance), _exact(bound)):
            yield SchemaError(f"{instance} is {words} {bound}")

    return check


_ExactValidator = validators.extend(
    Draft202012Validator,
    {
        "multipleOf": _multiple_of,
        "maximum": _bound(lambda value, bound: value <= bound, "greater than the maximum of"),
        "minimum": _bound(lambda value, bound: value >= bound, "less than the minimum of"),
        "exclusiveMaximum": _bound(lambda value, bound: value < bound, "not less than"),
        "exclusiveMinimum": _bound(lambda value, bound: value > bound, "not greater than"),
    },
)


@functools.cache
def _registry() -> Registry:
    """A registry holding the document, so `#/components/...` references resolve inside it."""
    return Registry().with_resource(DOCUMENT_URI, Resource.from_contents(document(), default_specification=DRAFT202012))


@functools.cache
def schema_validator(pointer: str) -> Any:
    """A validator for the schema at a JSON pointer into the document, e.g. /components/schemas/Payment."""
    return _ExactValidator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=_registry())


def _local(pointer: str) -> Any:
    """The node at a JSON pointer inside the document."""
    node: Any = document()
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _inline(node: Any, seen: tuple[str, ...] = ()) -> Any:
    """A copy of a schema with every local $ref replaced by what it points to."""
    if isinstance(node, list):
        return [_inline(item, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if ref in seen:
            raise ValueError(f"recursive $ref {ref} cannot be inlined")
        target = _inline(_local(ref[1:]), (*seen, ref))
        siblings = {key: _inline(value, seen) for key, value in node.items() if key != "$ref"}
        return {"allOf": [target, siblings]} if siblings else target
    return {key: _inline(value, seen) for key, value in node.items()}


@functools.cache
def request_validator(operation_id: str) -> Any:
    """A validator for an operation's request body, its references resolved once, up front.

    Following $ref through the registry on every request cost ~0.2 ms of a ~0.5 ms validation
    (measured on a charge body); the inlined schema validates the same way without the lookups.
    """
    return _ExactValidator(_inline(_local(request_schema_pointer(operation_id))))


@functools.cache
def request_schema_pointer(operation_id: str) -> str:
    """The JSON pointer of an operation's application/json request body schema."""
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                escaped = path.replace("~", "~0").replace("/", "~1")
                return f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"
    raise KeyError(operation_id)


def _field_of(error: SchemaError) -> str:
    """Which field an error is about, for the 400 body's `field`."""
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - allowed) if isinstance(error.instance, dict) else []
        if extra:
            return str(extra[0])
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            return str(missing[0])
    for part in error.absolute_path:
        return str(part)
    return "body"


def _message(field: str, error: SchemaError) -> str:
    """A sentence naming the field, from the schema rule that failed."""
    if error.validator == "additionalProperties":
        return f"Unknown field '{field}'."
    if error.validator == "required":
        return f"Field '{field}' is required."
    detail = error.message if len(error.message) <= MAX_DETAIL else error.message[:MAX_DETAIL] + "..."
    return f"Field '{field}' is invalid: {detail}."


def validate_request_body(operation_id: str, body: dict[str, Any]) -> None:
    """Raise a 400 ValidationError naming the field when `body` breaks the operation's documented schema."""
    validator = request_validator(operation_id)
    errors = sorted(validator.iter_errors(body), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if not errors:
        return
    # Prefer the error about the shallowest, first field; oneOf wrappers report their sub-errors.
    error = errors[0]
    if error.validator in ("oneOf", "anyOf") and error.context:
        error = min(error.context, key=lambda e: len(e.absolute_path))
        field = _field_of(errors[0])
    else:
        field = _field_of(error)
    raise ValidationError(_message(field, error), field=field)


def list_parameter(name: str) -> dict[str, Any]:
    """The schema of one GET /v1/payments query parameter (bounds and enums come from here)."""
    for parameter in document()["paths"]["/v1/payments"]["get"]["parameters"]:
        if parameter.get("name") == name:
            schema = parameter["schema"]
            if "$ref" in schema:
                return document()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
            return schema
    raise KeyError(name)


def list_parameter_names() -> tuple[str, ...]:
    """The query parameters GET /v1/payments documents (any other is rejected)."""
    return tuple(p["name"] for p in document()["paths"]["/v1/payments"]["get"]["parameters"])
