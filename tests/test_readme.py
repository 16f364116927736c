"""The README stays true: its configuration reference and quick-start commands match the code."""

from __future__ import annotations

import re
from pathlib import Path

from imascl_ray.cli import discover_commands
from imascl_ray.config import reference_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_configuration_reference_matches_the_config_class():
    block = re.search(r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", README, re.S)
    assert block, "README lost its configuration-reference markers"
    assert block.group(1) == reference_markdown(), "regenerate it: imascl-ray config --reference"


def test_quick_start_has_two_commands_that_exist():
    quick_start = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in quick_start.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "imascl-ray quickstart" in commands[0] and "pytest" in commands[1]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert commands[1].split("&& ", 1)[1] in ci, "CI must run the README's test command"


def test_every_sub_command_the_readme_uses_exists():
    used = set(re.findall(r"imascl-ray ([a-z-]+)", README))
    assert used <= set(discover_commands())
