"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs on these machines)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from scripts.with_pgbouncer import OUTAGE_SETTINGS
from tests.helpers import FRONT_DOOR_TEMPLATE, render_front_door

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_database_service_and_redis() -> None:
    services = compose()["services"]
    db, app, cache = services["payment_db"], services["payment-service"], services["redis"]

    assert db["image"] == "postgres:15-alpine"
    assert db["ports"] == ["5433:5432"]
    assert "payment_db_data:/var/lib/postgresql/data" in db["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "ports" not in app and app["expose"] == ["8082"]  # clients come through front-door
    assert app["depends_on"]["payment_db"]["condition"] == "service_healthy"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert app["environment"]["DB_HOST"] == "${PAYMENT_DB_HOST:-payment_db}"  # payment_db unless the pooler is chosen
    assert app["environment"]["RATE_LIMIT_STORAGE_URI"].startswith("redis://redis:")
    assert "/ready" in " ".join(app["healthcheck"]["test"])
    assert "redis-cli" in " ".join(cache["healthcheck"]["test"])
    assert "payment_db_data" in compose()["volumes"]


def test_clients_reach_the_service_only_through_the_front_door() -> None:
    services = compose()["services"]
    front, app = services["front-door"], services["payment-service"]
    environment = front["environment"]
    [mount] = front["volumes"]
    source, target, mode = mount.split(":")
    template = Path(target).name

    assert front["ports"] == ["8082:8080"] and environment["FRONT_DOOR_PORT"] == "8080"
    assert [name for name, service in services.items() if "8082" in " ".join(service.get("ports", []))] == [
        "front-door"
    ]
    assert environment["FRONT_DOOR_UPSTREAM"] == f"payment-service:{app['expose'][0]}"
    assert front["depends_on"]["payment-service"]["condition"] == "service_healthy"
    # The image's entrypoint renders /etc/nginx/templates/X.template into $NGINX_ENVSUBST_OUTPUT_DIR/X.
    assert (ROOT / source).resolve() == FRONT_DOOR_TEMPLATE and mode == "ro"
    assert Path(target).parent == Path("/etc/nginx/templates") and template.endswith(".template")
    rendered = str(Path(environment["NGINX_ENVSUBST_OUTPUT_DIR"]) / template.removesuffix(".template"))
    assert front["command"][:1] == ["nginx"] and front["command"][front["command"].index("-c") + 1] == rendered
    assert environment["NGINX_ENVSUBST_FILTER"] == "^FRONT_DOOR_"
    assert "${FRONT_DOOR_" not in render_front_door(environment)
    # front-door appends the client's address to X-Forwarded-For: one hop to trust.
    assert app["environment"]["TRUSTED_PROXY_COUNT"] == "1"


def test_prometheus_and_grafana_sit_behind_the_observability_profile() -> None:
    services = compose()["services"]

    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
    for name in ("payment_db", "redis", "payment-service"):
        assert "profiles" not in services[name]
    assert any("prometheus.yml" in v for v in services["prometheus"]["volumes"])
    assert any("deploy/grafana/dashboards" in v for v in services["grafana"]["volumes"])


def test_pgbouncer_sits_behind_the_pooler_profile_in_transaction_mode() -> None:
    services = compose()["services"]
    pooler = services["pgbouncer"]

    assert pooler["profiles"] == ["pooler"]
    assert pooler["environment"]["POOL_MODE"] == "transaction"
    assert pooler["environment"]["DB_HOST"] == "payment_db"
    assert "options" in pooler["environment"]["IGNORE_STARTUP_PARAMETERS"]
    assert services["payment-service"]["environment"]["DB_HOST"] == "${PAYMENT_DB_HOST:-payment_db}"


def test_pgbouncer_in_compose_has_the_outage_timeouts_of_the_test_configuration() -> None:
    # The image writes each environment variable, upper-cased, as the pgbouncer.ini setting of
    # that name (edoburu/pgbouncer's entrypoint.sh); scripts/with_pgbouncer.py holds the values.
    environment = compose()["services"]["pgbouncer"]["environment"]

    assert {name: environment.get(name.upper()) for name in OUTAGE_SETTINGS} == OUTAGE_SETTINGS


def test_no_password_is_written_in_the_compose_file() -> None:
    secret_like = re.compile(r"PASS|SECRET|TOKEN|KEY", re.IGNORECASE)
    checked = 0
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if secret_like.search(name):
                checked += 1
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), f"{name} must come from the environment"
    assert checked >= 2  # POSTGRES_PASSWORD and DB_PASS at least


def test_dockerfile_runs_as_paymentservice_with_a_health_check_on_ready() -> None:
    instructions = dockerfile_instructions()
    kinds = [kind for kind, _ in instructions]
    args = dict(instructions)

    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(
        "useradd --uid 1000" in rest and "paymentservice" in rest for kind, rest in instructions if kind == "RUN"
    )
    assert args["USER"] == "paymentservice"
    assert kinds.index("USER") > max(i for i, (kind, _) in enumerate(instructions) if kind == "RUN")
    assert args["EXPOSE"] == "8082"
    assert "/ready" in args["HEALTHCHECK"] and "urllib" in args["HEALTHCHECK"]
    assert "scripts/start.sh" in args["CMD"]


def test_dependencies_are_installed_in_their_own_layer_before_the_code() -> None:
    instructions = dockerfile_instructions()
    copies = [i for i, (kind, _) in enumerate(instructions) if kind == "COPY"]
    install = next(i for i, (kind, rest) in enumerate(instructions) if kind == "RUN" and "pip install" in rest)

    assert instructions[copies[0]][1].startswith("requirements.txt")
    assert copies[0] < install < copies[1]


def test_the_image_installs_the_runtime_lock_with_hashes_checked() -> None:
    installs = [rest for kind, rest in dockerfile_instructions() if kind == "RUN" and "pip install" in rest]

    assert installs == ["pip install --require-hashes -r requirements.txt"]
    assert "--hash=sha256:" in (ROOT / "requirements.txt").read_text()


def test_nothing_on_the_start_path_can_drop_data() -> None:
    start = (ROOT / "scripts" / "start.sh").read_text()

    for text in (DOCKERFILE.read_text(), start, COMPOSE.read_text()):
        assert "--reset" not in text
        assert not re.search(r"(?i)drop\s+(table|database|schema)", text)
    assert "exec gunicorn -c gunicorn.conf.py app:app" in start


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())

    assert {".venv", ".pgdata", ".env", ".git"} <= ignored
