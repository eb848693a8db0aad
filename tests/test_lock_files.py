"""The dependency locks: pyproject.toml declares, requirements*.txt lock with hashes, everything installs from them."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.locks import DEV_LOCK, HASH, LOCKS, PIN, ROOT, RUN_LOCK, RUNTIME_LOCK, lock_lines, locked


def declared() -> dict[str, list[Requirement]]:
    """pyproject.toml's direct dependencies: `runtime`, and each optional group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"runtime": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(text) for text in requirements] for group, requirements in groups.items()}


def make_dry_run(target: str) -> str:
    """What `make TARGET` would run from scratch (-B: as if nothing were built yet; -n: print only)."""
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def pip_installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_every_line_of_a_lock_pins_one_version_with_sha256_hashes(lock: Path) -> None:
    lines = lock_lines(lock)

    assert len(lines) >= 30
    for line in lines:
        assert not line.startswith("-"), f"{lock.name}: options, includes and indexes do not belong in a lock: {line}"
        assert PIN.fullmatch(HASH.sub("", line).strip()), f"{lock.name}: not pinned with ==: {line}"
        assert HASH.findall(line), f"{lock.name}: no hash: {line}"
        assert "--hash=" not in HASH.sub("", line), f"{lock.name}: a hash that is not sha256: {line}"


def test_pyproject_pins_every_direct_dependency_to_one_version() -> None:
    for group, requirements in declared().items():
        for requirement in requirements:
            specifiers = list(requirement.specifier)
            assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{group}: {requirement} is not pinned"


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(RUNTIME_LOCK, ["runtime"]), (RUN_LOCK, ["runtime", "run"]), (DEV_LOCK, ["runtime", "dev"])],
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_a_lock_holds_its_groups_direct_dependencies_at_the_declared_versions(lock: Path, groups: list[str]) -> None:
    packages = locked(lock)
    direct = declared()

    for group in groups:
        for requirement in direct[group]:
            name = canonicalize_name(requirement.name)
            assert name in packages, f"{requirement} ({group}) is missing from {lock.name}: run `make lock`"
            assert packages[name].version == next(iter(requirement.specifier)).version, (
                f"{lock.name} has {name}=={packages[name].version}, pyproject.toml says {requirement}: run `make lock`"
            )
            for extra in requirement.extras:  # limits[redis]: the extra's packages came along
                assert extra in packages, f"{requirement}: {extra} missing from {lock.name}"


def test_the_runtime_lock_is_in_the_run_lock_and_both_in_the_dev_lock_with_the_same_versions_and_hashes() -> None:
    runtime, run, dev = locked(RUNTIME_LOCK), locked(RUN_LOCK), locked(DEV_LOCK)

    for inner, outer, outer_name in ((runtime, run, "run"), (runtime, dev, "dev"), (run, dev, "dev")):
        for name, package in inner.items():
            assert outer.get(name) == package, f"{name} differs between the locks ({outer_name})"


def test_no_test_tool_is_in_the_runtime_lock_nor_in_what_make_run_installs() -> None:
    runtime, run = locked(RUNTIME_LOCK), locked(RUN_LOCK)
    direct = declared()
    run_only = {canonicalize_name(r.name) for r in direct["run"]}
    test_tools = {canonicalize_name(r.name) for r in direct["dev"]} - run_only

    assert test_tools >= {"pytest", "schemathesis", "localstripe", "kubernetes-validate", "uv"}
    assert not (test_tools | run_only) & set(runtime), "the image would install development tools"
    assert not test_tools & set(run), "make run would install test tools"
    assert run_only <= set(run)


def test_make_run_installs_only_the_run_lock_with_hashes_checked() -> None:
    installs = pip_installs(make_dry_run("run"))

    assert len(installs) == 1
    assert "--require-hashes" in installs[0] and re.search(r"-r requirements-run\.txt\b", installs[0])


@pytest.mark.parametrize("target", ["test", "install", "lint", "fuzz", "lock"])
def test_the_development_targets_install_the_dev_lock_with_hashes_checked(target: str) -> None:
    installs = pip_installs(make_dry_run(target))

    assert len(installs) == 1
    assert "--require-hashes" in installs[0] and re.search(r"-r requirements-dev\.txt\b", installs[0])


def test_the_makefile_installs_nothing_but_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    pip_lines = [line for line in makefile.splitlines() if "pip install" in line and not line.startswith("#")]

    assert pip_lines and all("--require-hashes" in line for line in pip_lines)
    assert re.findall(r"\$\(PIP_INSTALL\) -r (\S+)", makefile) == ["requirements-run.txt", "requirements-dev.txt"]
    assert makefile.count("$(PIP_INSTALL)") == 2


def test_ci_installs_through_make_and_fails_on_a_stale_lock() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]

    first_test = next(i for i, line in enumerate(commands) if "make test" in line or "readme_path.sh" in line)
    assert "make lock-check" in commands
    assert commands.index("make lock-check") < first_test
    assert not [line for line in commands if "pip install" in line], "CI installs only through make (the locks)"


def test_ci_runs_the_readme_s_two_commands_on_a_fresh_clone_as_root_and_as_an_ordinary_user() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    readme_path = (ROOT / "scripts" / "readme_path.sh").read_text()

    # No database settings are left in the environment when the README's path runs.
    unset = next(i for i, line in enumerate(commands) if line.startswith("unset DB_HOST"))
    as_root = commands.index("bash scripts/readme_path.sh")
    as_user = commands.index("bash scripts/readme_path.sh --user payments-ci")
    exported = next(i for i, line in enumerate(commands) if line.startswith("export DB_HOST"))
    assert unset < as_root < as_user < exported
    assert "git clone" in readme_path and "env -i" in readme_path
    assert 'make -C "$work/clone" run' in readme_path and 'make -C "$work/clone" test' in readme_path


def test_the_development_page_says_how_to_add_a_dependency_and_update_the_lock() -> None:
    page = (ROOT / "docs" / "development.md").read_text()
    section = page[page.index("## Dependencies and the lock") :]
    section = section[: section.index("\n## ", 1)]

    for needed in ("pyproject.toml", "make lock", "make lock-check", *(path.name for path in LOCKS)):
        assert needed in section, needed
