"""Write config.py's configuration table into README.md's ## Configuration section, in place.

Usage: python scripts/readme_config_table.py   (the test in tests/test_config_docs.py checks the result)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import config  # noqa: E402 - needs the repo root on sys.path


def main() -> int:
    """Replace the table's lines with the generated ones."""
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").split("\n")
    section = lines.index("## Configuration")
    start = next(i for i in range(section, len(lines)) if lines[i].startswith("| Variable |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    lines[start:end] = config.markdown_table().split("\n")
    readme.write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
