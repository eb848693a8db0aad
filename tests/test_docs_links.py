"""Every relative link in README.md and docs/ resolves (files and #headings), and the README stays short."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 180

FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>]*>|\S+)", re.M)
# A code span may run over a line break, never over a blank line (that ends its paragraph).
CODE_SPAN = re.compile(r"(`+)(?:(?!\1)(?:[^\n]|\n(?![ \t]*\n)))+?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def markdown_pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    fence = None
    for line in text.splitlines():
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None and line.lstrip().startswith(fence):
            fence = None
        elif fence is None:
            yield line


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text only
    text = text.strip().lower()
    text = "".join(char for char in text if char.isalnum() or char in " -_")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of every heading of a Markdown text, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        heading = HEADING.match(line)
        if heading is None:
            continue
        slug = github_slug(heading.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_targets(text: str) -> list[str]:
    """Every link target of a Markdown text (inline links, images, reference definitions), code excluded."""
    prose = CODE_SPAN.sub("", "\n".join(prose_lines(text)))
    targets = [match.group(1) for match in REFERENCE_DEFINITION.finditer(prose)]
    targets += [match.group(1) for match in INLINE_LINK.finditer(prose)]
    return [target.strip("<>") for target in targets]


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` that name no file inside `root`, or no heading of a Markdown file."""
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue  # another site: not ours to check offline
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root) or not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(root)}")
    return broken


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_docs_folder_has_the_pages_the_readme_points_to() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {target for target in link_targets(readme) if target.startswith("docs/")}

    assert {"docs/api.md", "docs/architecture.md", "docs/operations.md", "docs/testing.md"} <= linked


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()

    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_a_missing_file_and_a_missing_heading_are_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Some `code` here (really)\n", encoding="utf-8")
    (tmp_path / "picture.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#some-code-here-really) [fine too](#page) ![shot](picture.png)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [here neither](#elsewhere)\n"
        "[outside](../outside.md) [web](https://example.com/x#y) [split\nover lines](gone-too.md)\n"
        "`[in code](missing-in-code.md)`\n\n"
        "```\n[in a block](missing-in-block.md)\n```\n",
        encoding="utf-8",
    )

    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with that anchor in other.md",
        "#elsewhere: no heading with that anchor in page.md",
        "../outside.md: no such file",
        "gone-too.md: no such file",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        (
            "Migrations outside a transaction (`CREATE INDEX CONCURRENTLY`)",
            "migrations-outside-a-transaction-create-index-concurrently",
        ),
        ("Past one PostgreSQL (on paper)", "past-one-postgresql-on-paper"),
        ("Settings the tests change, and why", "settings-the-tests-change-and-why"),
        ("Upgrading to migration 0009", "upgrading-to-migration-0009"),
        ("See [the API](api.md)", "see-the-api"),
    ],
)
def test_headings_get_github_s_anchors(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_a_repeated_heading_gets_a_numbered_anchor() -> None:
    assert anchors("## Notes\n\ntext\n\n## Notes\n\n```\n## not a heading\n```\n") == {"notes", "notes-1"}
