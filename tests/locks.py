"""Reading the dependency locks (requirements*.txt, written by `make lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements.txt"
RUN_LOCK = ROOT / "requirements-run.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"
LOCKS = (RUNTIME_LOCK, RUN_LOCK, DEV_LOCK)
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>.+?))?")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class Locked:
    version: str
    marker: str | None
    hashes: frozenset[str]


def lock_lines(path: Path) -> list[str]:
    """The requirement lines of a lock file, continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def locked(path: Path) -> dict[str, Locked]:
    """Each package of a lock file by canonical name."""
    packages = {}
    for line in lock_lines(path):
        requirement = HASH.sub("", line).strip()
        match = PIN.fullmatch(requirement)
        assert match, f"{path.name}: not a pinned requirement: {line}"
        packages[canonicalize_name(match["name"])] = Locked(
            match["version"], match["marker"], frozenset(HASH.findall(line))
        )
    return packages


def applies(package: Locked, environment: dict[str, str]) -> bool:
    """True when pip installs `package` in `environment` (marker variables; the rest from this interpreter)."""
    return package.marker is None or Marker(package.marker).evaluate(environment)
