"""The README and the documentation stay true.

The configuration reference in ``docs/configuration.md`` matches the config classes, the README's
quick-start commands are the ones CI runs, every ``imascl-ray`` sub-command they name exists, every
relative link points at a file that exists, and the README stays short enough to read to the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from imascl_ray.cli import discover_commands
from imascl_ray.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN_FILES = [README_PATH, *PAGES]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _code(text: str) -> str:
    """The fenced blocks and inline code spans of a Markdown text: where commands are written."""
    return "\n".join(FENCE.findall(text) + INLINE_CODE.findall(FENCE.sub("", text)))


def relative_links(text: str) -> Iterator[str]:
    """The file part of every relative Markdown link outside code (no URLs, no in-page anchors)."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    for target in LINK.findall(prose):
        if SCHEME.match(target) or target.startswith("#"):
            continue
        yield target.split("#", 1)[0]


def test_configuration_reference_matches_the_config_class():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", page, re.S)
    assert block, "docs/configuration.md lost its configuration-reference markers"
    assert block.group(1) == reference_markdown(), (
        "regenerate it: paste `imascl-ray config --reference` between the markers of docs/configuration.md"
    )


def test_quick_start_has_two_commands_that_exist():
    quick_start = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "imascl-ray quickstart" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].split("&& ", 1)[1] in ci, "CI must run the README's test command"


def test_ci_builds_the_docs_strictly():
    ci = (ROOT / ".ci" / "run").read_text()
    build = [
        line
        for line in ci.splitlines()
        if line.startswith(".venv/bin/mkdocs build") or " .venv/bin/mkdocs build" in line
    ]
    assert len(build) == 1 and "--strict" in build[0], "CI must run `mkdocs build --strict`"
    # mkdocs 1.6 counts --strict's warnings after --quiet has dropped them: a broken link would pass.
    assert not re.search(r"\s(-q|--quiet)\b", build[0]), "--quiet hides the warnings --strict fails on"


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sub_command_the_readme_and_docs_use_exists(path: Path):
    used = set(re.findall(r"imascl-ray ([a-z][a-z-]*)", _code(path.read_text(encoding="utf-8"))))
    missing = used - set(discover_commands())
    assert not missing, f"{path.relative_to(ROOT)} names sub-commands that do not exist: {sorted(missing)}"


def test_the_readme_and_docs_name_the_main_sub_commands():
    # Guards the check above: if the extraction found nothing, it would pass on anything.
    used = set()
    for path in MARKDOWN_FILES:
        used |= set(re.findall(r"imascl-ray ([a-z][a-z-]*)", _code(path.read_text(encoding="utf-8"))))
    assert {"quickstart", "train", "tune", "eval", "config", "corpus", "model"} <= used


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(path: Path):
    links = list(relative_links(path.read_text(encoding="utf-8")))
    broken = [link for link in links if not (path.parent / link).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to files that do not exist: {broken}"
    if path.parent == DOCS:
        # mkdocs only knows the files under docs/: a link out of it breaks `mkdocs build --strict`.
        outside = [
            link
            for link in links
            if not Path(os.path.normpath(path.parent / link)).is_relative_to(DOCS)  # symlinks not followed
        ]
        assert not outside, f"{path.relative_to(ROOT)} links out of docs/ (mkdocs cannot): {outside}"


def test_relative_links_skips_urls_anchors_and_code():
    text = (
        "[a](quickstart.md#results) [b](https://example.org/x.md) [c](#local) `[d](missing.md)`\n"
        '[e](../benchmarks/RESULTS.md "title")\n```\n[f](also-missing.md)\n```\n'
    )
    assert list(relative_links(text)) == ["quickstart.md", "../benchmarks/RESULTS.md"]
    assert list(relative_links(README)), "the README links to its docs pages"


def test_the_docs_nav_lists_every_page():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(entries) -> Iterator[str]:
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                yield from pages(value) if isinstance(value, list) else [value]

    assert sorted(pages(nav)) == sorted(p.name for p in PAGES)


def test_the_readme_stays_short():
    lines = len(README.splitlines())
    assert lines <= 200, f"README.md has {lines} lines: move the detail into docs/ and link to it"
