"""deploy/k8s: every manifest valid against the Kubernetes schemas (offline), and wired to the service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config import SETTINGS, Config
from tests.deploy.test_gunicorn_conf import load_conf
from tests.helpers import FRONT_DOOR_TEMPLATE, NGINX, render_front_door

K8S = Path(__file__).resolve().parent.parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
SECRET_SETTINGS = {spec.name for spec in SETTINGS if spec.secret}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource of the kustomization, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in documents(K8S / name):
            found[doc["kind"]] = doc
    return found


def pod_containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return resource["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}: {exc.message} at {list(exc.path)}")


def test_the_kustomization_lists_every_manifest_and_they_make_the_whole_set() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())

    assert sorted(kustomization["resources"]) == [path.name for path in MANIFESTS]
    assert set(resources()) == {
        "ConfigMap", "Job", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
    }  # fmt: skip


def containers_by_name(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in pod_containers(resource)}


def test_the_probes_ask_live_and_ready_on_the_port_gunicorn_listens_on() -> None:
    found = resources()
    container = containers_by_name(found["Deployment"])["payment-service"]
    port = found["ConfigMap"]["data"]["SERVICE_PORT"]
    annotations = found["Deployment"]["spec"]["template"]["metadata"]["annotations"]

    assert container["ports"] == [{"name": "gunicorn", "containerPort": int(port)}]
    assert (container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]) == (
        {"path": "/live", "port": "gunicorn"}, {"path": "/ready", "port": "gunicorn"},
    )  # fmt: skip
    assert annotations["prometheus.io/port"] == port


def test_the_service_sends_clients_to_the_front_door_sidecar() -> None:
    found = resources()
    containers = containers_by_name(found["Deployment"])
    front, app = containers["front-door"], containers["payment-service"]
    environment = {variable["name"]: variable["value"] for variable in front["env"]}
    [service_port] = found["Service"]["spec"]["ports"]

    assert front["ports"] == [{"name": service_port["targetPort"], "containerPort": 8080}]
    assert environment["FRONT_DOOR_PORT"] == "8080"
    assert environment["FRONT_DOOR_UPSTREAM"] == f"127.0.0.1:{app['ports'][0]['containerPort']}"
    assert "command" not in front  # the image's entrypoint must run: it renders the template


def test_the_sidecar_runs_the_shipped_front_door_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    [template] = generator["files"]
    deployment = resources()["Deployment"]["spec"]["template"]["spec"]
    front = containers_by_name(resources()["Deployment"])["front-door"]
    environment = {variable["name"]: variable["value"] for variable in front["env"]}
    volumes = {volume["name"]: volume for volume in deployment["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in front["volumeMounts"]}

    assert (K8S / template).resolve() == FRONT_DOOR_TEMPLATE
    assert volumes[mounts["/etc/nginx/templates"]]["configMap"]["name"] == generator["name"]
    rendered = str(Path(environment["NGINX_ENVSUBST_OUTPUT_DIR"]) / template.removesuffix(".template"))
    assert front["args"][front["args"].index("-c") + 1] == rendered
    assert environment["NGINX_ENVSUBST_OUTPUT_DIR"] in mounts and "emptyDir" in volumes[mounts["/tmp"]]
    assert environment["NGINX_ENVSUBST_FILTER"] == "^FRONT_DOOR_"


@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason=f"nginx is not installed ({NGINX})")
def test_the_sidecar_s_rendered_config_passes_nginx_s_own_check(tmp_path: Path) -> None:
    front = containers_by_name(resources()["Deployment"])["front-door"]
    environment = {variable["name"]: variable["value"] for variable in front["env"]}
    config = tmp_path / "front-door.conf"
    config.write_text(render_front_door(environment))

    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", f"{tmp_path}/", "-e", "stderr", "-c", str(config)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr


def test_the_service_trusts_the_ingress_and_the_sidecar_as_two_proxies() -> None:
    # ingress controller -> front-door sidecar -> gunicorn: each appends one address to X-Forwarded-For.
    assert resources()["ConfigMap"]["data"]["TRUSTED_PROXY_COUNT"] == "2"


def test_the_migration_job_runs_database_setup_without_seeding_and_the_pods_do_not_migrate() -> None:
    found = resources()
    [job] = pod_containers(found["Job"])
    api = containers_by_name(found["Deployment"])["payment-service"]

    assert job["command"][:2] == ["python", "database_setup.py"]
    assert "--no-seed" in job["command"] and "--reset" not in job["command"]
    assert api["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    assert found["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_no_secret_value_is_written_in_any_manifest() -> None:
    found = resources()
    assert not SECRET_SETTINGS & set(found["ConfigMap"]["data"])
    assert "Secret" not in found
    for kind in ("Deployment", "Job"):
        for container in pod_containers(found[kind]):
            for variable in container.get("env", []):
                if variable["name"] in SECRET_SETTINGS:
                    assert set(variable) == {"name", "valueFrom"}, variable["name"]
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == "payment-service-secrets"
    text = "\n".join(path.read_text() for path in K8S.glob("*.yaml"))
    assert not re.search(r"sk_(test|live)_|whsec_|postgresql://[^@\s]*:[^@\s]*@", text)


def test_every_configmap_key_is_a_setting_the_service_reads() -> None:
    names = {spec.name for spec in SETTINGS if spec.from_env}

    assert set(resources()["ConfigMap"]["data"]) <= names


def test_pods_run_as_non_root_on_a_read_only_root_filesystem_with_a_writable_tmp() -> None:
    for kind in ("Deployment", "Job"):
        spec = resources()[kind]["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"]
    deployment = resources()["Deployment"]["spec"]["template"]["spec"]
    assert {mount["mountPath"] for mount in deployment["containers"][0]["volumeMounts"]} == {"/tmp"}


def test_termination_waits_longer_than_the_pre_stop_pause_and_gunicorn_s_graceful_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUNICORN_GRACEFUL_TIMEOUT", raising=False)
    spec = resources()["Deployment"]["spec"]["template"]["spec"]
    pause = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])

    assert spec["terminationGracePeriodSeconds"] > pause + load_conf(monkeypatch).graceful_timeout


def test_the_budget_the_autoscaler_and_the_service_select_the_deployment_s_pods() -> None:
    found = resources()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]

    assert found["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == found["Deployment"]["metadata"]["name"]
    assert found["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2


def test_the_autoscaler_s_largest_fleet_fits_postgresql_s_default_max_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    found = resources()
    pods = (
        found["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
        + found["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    )
    connections = pods * load_conf(monkeypatch).workers * int(found["ConfigMap"]["data"]["DB_POOL_SIZE"])

    assert connections <= 100 - 5  # PostgreSQL's default, with room for the migration Job and operators
    assert int(found["ConfigMap"]["data"]["DB_POOL_SIZE"]) >= load_conf(monkeypatch).threads


# A plausible value for each key of the Secret the manifests reference (the Secret itself is not shipped).
SECRET_EXAMPLES = {
    "DB_PASS": "database-password",
    "API_KEYS": "trip-service:a-long-random-key",
    "NOTIFY_SIGNING_SECRET": "a-long-random-signing-secret",
    "STRIPE_API_KEY": "sk_live_example",
    "STRIPE_WEBHOOK_SECRETS": "whsec_example",
}


def pod_environment(kind: str) -> dict[str, str]:
    """What a pod of `kind` sees: the ConfigMap, its own values, and each Secret key it references."""
    found = resources()
    env = dict(found["ConfigMap"]["data"])
    [container] = pod_containers(found[kind])[:1]
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = SECRET_EXAMPLES[variable["valueFrom"]["secretKeyRef"]["key"]]
    return env


def test_the_shipped_pods_run_in_production_mode_on_stripe_and_pass_check_deploy() -> None:
    config = Config.from_env(pod_environment("Deployment"))

    assert (config.APP_ENV, config.GATEWAY, config.TRIP_SERVICE_MOCK, config.DEBUG) == (
        "production", "stripe", False, False,
    )  # fmt: skip
    assert config.deploy_findings() == []


def test_check_deploy_passes_on_the_shipped_values_and_fails_on_the_simulator() -> None:
    def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env.pop("PROMETHEUS_MULTIPROC_DIR")  # the pod's emptyDir; none here
        return subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=K8S.parent.parent,
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    shipped = check_deploy(pod_environment("Deployment"))
    simulator = check_deploy({**pod_environment("Deployment"), "GATEWAY": "simulator", "STRIPE_API_KEY": ""})

    assert (shipped.returncode, shipped.stdout.strip()) == (0, "no findings for a production deployment")
    assert simulator.returncode == 1
    assert simulator.stdout.splitlines()[0].startswith("finding: GATEWAY is simulator")


def test_the_migration_job_can_read_its_settings() -> None:
    config = Config.from_env(pod_environment("Job"), refuse_unsafe=False)

    assert config.GATEWAY == "stripe"


def test_every_secret_key_the_manifests_reference_is_in_the_documented_command() -> None:
    operations = (K8S.parent.parent / "docs" / "operations.md").read_text()
    command = operations[operations.index("kubectl create secret generic payment-service-secrets") :].split("```")[0]
    referenced = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for kind in ("Deployment", "Job")
        for container in pod_containers(resources()[kind])
        for variable in container.get("env", [])
        if "valueFrom" in variable and "secretKeyRef" in variable["valueFrom"]
    }

    assert referenced == set(SECRET_EXAMPLES)
    for key in referenced:
        assert f"--from-literal={key}=" in command, key
