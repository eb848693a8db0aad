"""Write config.py's configuration table into docs/configuration.md's ## Settings section, in place.

Usage: python scripts/readme_config_table.py   (the test in tests/test_config_docs.py checks the result)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402 - needs the repo root on sys.path

# The page that holds the table, and the heading of the section the table is in.
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
SECTION = "## Settings"


def table_span(lines: list[str]) -> tuple[int, int]:
    """The [start, end) line indices of the table (its lines start with `|`) in the ## Settings section."""
    section = lines.index(SECTION)
    start = next(i for i in range(section, len(lines)) if lines[i].startswith("| Variable |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return start, end


def main() -> int:
    """Replace the table's lines with the generated ones."""
    lines = CONFIGURATION_PAGE.read_text(encoding="utf-8").split("\n")
    start, end = table_span(lines)
    lines[start:end] = config.markdown_table().split("\n")
    CONFIGURATION_PAGE.write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
