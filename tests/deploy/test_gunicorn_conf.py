"""gunicorn.conf.py: bind and sizes from the environment, no control socket, a clean metrics directory."""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from tests.helpers import closed_port

ROOT = Path(__file__).resolve().parents[2]


def load_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for name in (
        "GUNICORN_BIND",
        "GUNICORN_WORKERS",
        "GUNICORN_THREADS",
        "GUNICORN_WORKER_CONNECTIONS",
        "GUNICORN_REQUEST_READ_TIMEOUT",
        "SERVICE_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", ROOT / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_suit_a_two_core_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch)

    assert conf.bind == "0.0.0.0:8082"
    assert (conf.workers, conf.threads) == (2, 4)
    # sync for one thread, gthread for more, both with JSON error bodies (tests/deploy/test_server_errors.py)
    assert conf.worker_class == "api.server_errors.JsonErrorWorker"
    assert conf.worker_connections == 8  # twice the threads, so keep-alive clients spread over workers
    assert conf.control_socket_disable is True
    assert conf.timeout > 0 and conf.graceful_timeout > 0
    assert conf.request_read_timeout == 5  # seconds a slow client may hold a thread (tests/deploy/test_slow_clients.py)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch, SERVICE_PORT="9001", GUNICORN_WORKERS="3", GUNICORN_THREADS="1")

    assert conf.bind == "0.0.0.0:9001"
    assert (conf.workers, conf.threads) == (3, 1)
    assert load_conf(monkeypatch, GUNICORN_WORKER_CONNECTIONS="50").worker_connections == 50
    assert load_conf(monkeypatch, GUNICORN_REQUEST_READ_TIMEOUT="2.5").request_read_timeout == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_request_read_deadline_that_is_not_a_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_conf(monkeypatch, GUNICORN_REQUEST_READ_TIMEOUT=value)

    assert stopped.value.code == 2


def test_each_worker_gets_the_request_read_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch, GUNICORN_REQUEST_READ_TIMEOUT="3")
    worker = SimpleNamespace(request_read_timeout=5.0)

    conf.post_fork(server=None, worker=worker)

    assert worker.request_read_timeout == 3


def test_start_clears_only_old_metric_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    conf = load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))

    conf.on_starting(server=None)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


def test_a_directory_it_made_itself_is_removed_on_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Empty counts as unset; monkeypatch restores the real environment afterwards.
    conf = load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR="")

    conf.on_starting(server=None)
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert made.is_dir()
    conf.on_exit(server=None)

    assert not made.exists()


def test_a_directory_the_operator_named_is_kept_on_exit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = load_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))

    conf.on_starting(server=None)
    conf.on_exit(server=None)

    assert tmp_path.is_dir()


def test_gunicorn_builds_no_access_log_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config as GunicornConfig

    conf = load_conf(monkeypatch)
    cfg = GunicornConfig()
    cfg.set("logger_class", conf.logger_class)
    cfg.set("logconfig_dict", conf.logconfig_dict)
    logger = cfg.logger_class(cfg)

    # The logging config alone would make gunicorn's own logger format an access line per request.
    assert logger.access_log_enabled is False
    assert logger.access(None, None, {}, None) is None


def test_a_worker_freezes_what_it_built_at_start_so_full_collections_skip_it(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch)
    before = gc.get_freeze_count()
    try:
        conf.post_worker_init(None)

        assert gc.get_freeze_count() > before
        assert gc.get_count()[2] == 0  # collected first, so nothing young is frozen with garbage in it
    finally:
        gc.unfreeze()


def run_gunicorn(env: dict[str, str], config_file: str = "gunicorn.conf.py") -> subprocess.CompletedProcess[str]:
    """Start gunicorn as an operator would and wait for it to exit (a run that never exits fails the test)."""
    # A metrics directory of its own: without gunicorn.conf.py nothing sets one, and prometheus_client
    # would write its counter files into the checkout.
    metrics = tempfile.mkdtemp(prefix="payment-metrics-")
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", config_file, "app:app", "-b", f"127.0.0.1:{closed_port()}"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": metrics, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_configuration_error_stops_gunicorn_before_any_worker_starts() -> None:
    result = run_gunicorn({"API_KEYS": "trips:same-key,rides:same-key"})

    assert result.returncode == 2
    assert "configuration error: API_KEYS gives 'trips' and 'rides' the same key" in result.stderr
    assert "Booting worker" not in result.stdout + result.stderr


def test_every_unsafe_production_setting_stops_gunicorn_with_one_line_each() -> None:
    result = run_gunicorn({"APP_ENV": "production", "TRIP_SERVICE_MOCK": "true"})

    assert result.returncode == 2
    refusals = [line for line in result.stderr.splitlines() if line.startswith("configuration error: ")]
    named = [line.removeprefix("configuration error: ").split(" ")[0].split("=")[0] for line in refusals]
    assert named == ["GATEWAY", "TRIP_SERVICE_MOCK", "API_KEYS", "NOTIFY_SIGNING_SECRET"]


def test_without_the_config_file_a_worker_that_cannot_configure_stops_the_master() -> None:
    # An operator's own gunicorn command line without -c gunicorn.conf.py: the worker fails to boot
    # (exit 3), which gunicorn's master takes as a reason to stop rather than boot another.
    result = run_gunicorn({"API_KEYS": "trips:same-key,rides:same-key"}, config_file="/dev/null")

    assert result.returncode == 3
    assert "API_KEYS gives 'trips' and 'rides' the same key" in result.stderr
    assert result.stderr.count("Booting worker") <= 2  # the first workers, never a stream of new ones


def test_threads_given_on_the_command_line_get_twice_as_many_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config as GunicornConfig

    conf = load_conf(monkeypatch)
    cfg = GunicornConfig()
    cfg.set("threads", 24)  # what `--threads 24` does after gunicorn.conf.py was read (threads 4)
    cfg.set("worker_connections", conf.worker_connections)

    conf.follow_threads(SimpleNamespace(cfg=cfg))

    assert (conf.worker_connections, cfg.worker_connections) == (8, 48)


def test_an_explicit_worker_connections_is_kept_whatever_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from gunicorn.config import Config as GunicornConfig

    conf = load_conf(monkeypatch, GUNICORN_WORKER_CONNECTIONS="50")
    cfg = GunicornConfig()
    cfg.set("threads", 24)
    cfg.set("worker_connections", conf.worker_connections)

    conf.follow_threads(SimpleNamespace(cfg=cfg))

    assert cfg.worker_connections == 50


def test_no_test_leaves_prometheus_files_in_the_checkout() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.db"], cwd=ROOT, capture_output=True, text=True).stdout.split()

    assert tracked == []


def test_bad_gunicorn_variables_stop_it_with_one_line_each_and_no_traceback() -> None:
    result = run_gunicorn({"GUNICORN_WORKERS": "0", "GUNICORN_TIMEOUT": "abc", "GUNICORN_REQUEST_READ_TIMEOUT": "x"})

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "configuration error: GUNICORN_WORKERS must be at least 1, got 0",
        "configuration error: GUNICORN_TIMEOUT must be a whole number, got 'abc'",
        "configuration error: GUNICORN_REQUEST_READ_TIMEOUT must be a number, got 'x'",
    ]
