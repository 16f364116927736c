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


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "quickstart", "loss.tau=0.07", "--reference", "optim.lr=2e-5"],
        ["config", "quickstart", "loss.tau=0.07", "optim.lr=2e-5"],
        ["config", "--reference", "quickstart", "loss.tau=0.07", "optim.lr=2e-5"],
    ],
)
def test_overrides_may_come_before_or_after_options(argv):
    """As in ``ray job submit -- imascl-ray train quickstart --address auto tracking.output_dir=...``."""
    args = cli.parse_arguments(cli.build_parser(cli.discover_commands()), argv)
    assert args.config == "quickstart"
    assert args.overrides == ["loss.tau=0.07", "optim.lr=2e-5"]


def test_a_stray_argument_after_an_option_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "quickstart", "--address", "auto", "stray"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            FileNotFoundError(2, "No such file or directory", "runs/x.yaml"),
            "runs/x.yaml: No such file or directory",
        ),
        (PermissionError(13, "Permission denied", "/root/out"), "/root/out: Permission denied"),
        (
            InputError("space.yaml: not valid YAML: while parsing\n  in line 3\n    ^"),
            "space.yaml: not valid",
        ),
    ],
)
def test_path_errors_and_multi_line_messages_are_one_line_too(monkeypatch, capsys, error, line):
    def run(args):
        raise error

    broken = SimpleNamespace(NAME="broken", HELP="fails", add_arguments=lambda parser: None, run=run)
    monkeypatch.setattr(cli, "discover_commands", lambda: {"broken": broken})
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)
    assert cli.main(["broken"]) == 2
    printed = capsys.readouterr().err.splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"imascl-ray broken: error: {line}")
    monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    with pytest.raises(type(error)):
        cli.main(["broken"])
    monkeypatch.delenv(cli.DEBUG_VARIABLE)
    with pytest.raises(type(error)):
        cli.main(["broken", "--debug"])
