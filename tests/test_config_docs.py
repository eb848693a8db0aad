"""The README's configuration table is the one `config.py` generates from its declarations."""

from __future__ import annotations

from pathlib import Path

import config

README = Path(__file__).resolve().parent.parent / "README.md"
REGENERATE = "regenerate it with `python config.py` and paste the output into README.md's ## Configuration"


def readme_configuration_table() -> str:
    """The table (the lines starting with `|`) of the README's ## Configuration section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Configuration") : text.index("## Endpoints")]
    lines = section[section.index("| Variable |") :].splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def test_the_readme_configuration_table_is_the_generated_one() -> None:
    assert readme_configuration_table() == config.markdown_table(), f"README configuration table is stale: {REGENERATE}"


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
