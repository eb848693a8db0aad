"""The configuration table of docs/configuration.md is the one `config.py` generates from its declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

import config
from scripts import readme_config_table

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
REGENERATE = (
    "regenerate it with `python scripts/readme_config_table.py` (it rewrites docs/configuration.md's ## Settings)"
)


def settings_section(text: str) -> str:
    """The text of the ## Settings section of a page."""
    section = text[text.index("\n## Settings\n") + 1 :]
    following = section.find("\n## ", 1)
    return section if following == -1 else section[:following]


def configuration_table(text: str) -> str:
    """The table (the lines starting with `|`) of the ## Settings section of a page."""
    lines = settings_section(text)
    table = []
    for line in lines[lines.index("| Variable |") :].splitlines():
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def test_the_documented_configuration_table_is_the_generated_one() -> None:
    text = CONFIGURATION_PAGE.read_text(encoding="utf-8")

    assert configuration_table(text) == config.markdown_table(), f"configuration table is stale: {REGENERATE}"


def test_the_script_rewrites_a_stale_table_in_place_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "configuration.md"
    before = "# Configuration\n\nIntro.\n\n## Settings\n\nGenerated.\n\n"
    after = "\nA note after the table.\n\n## Later\n\nMore.\n"
    stale = (
        "| Variable | Default | Meaning |\n| --- | --- | --- |\n| `GONE` | `1` | a setting that no longer exists |\n"
    )
    page.write_text(before + stale + after, encoding="utf-8")
    monkeypatch.setattr(readme_config_table, "CONFIGURATION_PAGE", page)

    assert readme_config_table.main() == 0

    text = page.read_text(encoding="utf-8")
    assert text == before + config.markdown_table() + "\n" + after
    assert configuration_table(text) == config.markdown_table()


def test_the_table_has_one_row_per_environment_variable() -> None:
    rows = config.markdown_table().splitlines()[2:]
    names = [row.split("`")[1] for row in rows]

    assert names == [spec.name for spec in config.SETTINGS if spec.from_env]
    assert "TESTING" not in names
    assert "MAX_CONTENT_LENGTH" not in names


def test_secrets_are_shown_without_a_default() -> None:
    rows = {row.split("`")[1]: row for row in config.markdown_table().splitlines()[2:]}

    assert rows["DB_PASS"].startswith("| `DB_PASS` | none |")
    assert rows["API_KEYS"].startswith("| `API_KEYS` | none |")
    assert rows["DATABASE_URL"].startswith("| `DATABASE_URL` | unset |")


def test_python_config_py_prints_the_table(capsys) -> None:
    import runpy

    runpy.run_path(str(Path(config.__file__)), run_name="__main__")

    assert capsys.readouterr().out == config.markdown_table() + "\n"
