"""The command line: sub-commands are discovered, ``python -m`` works, bad input is one clear line."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from imascl_ray import cli
from imascl_ray.errors import InputError


def test_python_dash_m_lists_the_discovered_commands():
    result = subprocess.run(
        [sys.executable, "-m", "imascl_ray", "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    for name in cli.discover_commands():
        assert name in result.stdout


def test_every_command_module_follows_the_protocol():
    found = cli.discover_commands()
    assert "env" in found
    for name, module in found.items():
        assert name == module.NAME and module.HELP.strip(), name
        assert callable(module.add_arguments) and callable(module.run), name


def test_env_prints_the_stack(capsys):
    assert cli.main(["env"]) == 0
    output = capsys.readouterr().out
    assert "torch: 2." in output and "ray: 2." in output and "device: " in output


def test_input_errors_print_one_line_and_exit_2(monkeypatch, capsys):
    def run(args):
        raise InputError("corpus.tsv, line 3: expected 4 fields, got 2")

    broken = SimpleNamespace(
        NAME="broken", HELP="fails on purpose", add_arguments=lambda parser: None, run=run
    )
    monkeypatch.setattr(cli, "discover_commands", lambda: {"broken": broken})
    assert cli.main(["broken"]) == 2
    error = capsys.readouterr().err
    assert error.strip() == "imascl-ray broken: error: corpus.tsv, line 3: expected 4 fields, got 2"


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
