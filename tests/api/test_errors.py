"""Domain errors at the edge: every error a service can raise has its HTTP status in one table."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import services
from api.errors import STATUS, status_of, to_app_error
from services.idempotency_service import IdempotencyKeyInUseError
from utils.errors import DomainError

ROOT = Path(__file__).resolve().parents[2]


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(all_subclasses(sub) for sub in found))


def test_every_domain_error_a_service_can_raise_has_a_status() -> None:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        importlib.import_module(module.name)
    importlib.import_module("database.pool")

    missing = sorted(cls.__name__ for cls in all_subclasses(DomainError) if cls not in STATUS)

    assert missing == []


def test_a_key_in_use_answers_409_with_retry_after() -> None:
    answer = to_app_error(IdempotencyKeyInUseError())

    assert (answer.status_code, answer.code, answer.headers["Retry-After"]) == (409, "idempotency_key_in_use", "1")
    assert "retry_after" not in answer.to_dict()


def test_an_error_missing_from_the_table_is_a_500_not_a_guess() -> None:
    class UnmappedError(DomainError):
        code = "unmapped"

    assert status_of(UnmappedError("x")) == 500


def test_services_and_the_database_layer_know_nothing_of_http() -> None:
    offenders = []
    for layer in ("services", "database", "models"):
        for path in (ROOT / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    "flask",
                    "werkzeug",
                    "api",
                ):
                    offenders.append(f"{path.relative_to(ROOT)} imports {node.module}")
                if isinstance(node, ast.keyword) and node.arg == "status_code":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} passes status_code")

    assert offenders == []
