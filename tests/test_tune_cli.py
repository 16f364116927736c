"""``imascl-ray tune``: arguments, and bad input refused in one line before Ray starts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from imascl_ray import cli
from imascl_ray.commands.tune import resolve_space

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imascl_ray", "tune", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_a_bad_space_fails_in_one_line_before_ray_starts(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("base: quickstart\nsearch:\n  loss.tau: {uniform: [0.5, 0.1]}\n")
    started = time.monotonic()
    result = run_cli(str(space))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"imascl-ray tune: error: {space}, line 3: loss.tau: empty range [0.5, 0.1]: low must be below high"
    )
    assert "ray" not in result.stdout.lower()
    assert time.monotonic() - started < 60  # no cluster was started


def test_a_pair_set_typo_on_the_command_line_names_it():
    result = run_cli("smoke", "data.pair_set=en-qq")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "imascl-ray tune: error: command line (data.pair_set=en-qq): data.pair_set=en-qq: "
    )
    assert "'qq'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a search-space file"),
        (["smoke", "--resume", "somewhere"], "--resume PATH continues a sweep as it was started"),
        (["smoke", "--num-samples", "0"], "--num-samples must be at least 1"),
        (
            ["no_such_space"],
            "no such search-space file (known spaces: paper, paper_table5, quickstart, smoke)",
        ),
    ],
)
def test_argument_errors_exit_2(capsys, args, message):
    assert cli.main(["tune", *args]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    assert cli.main(["tune", "--resume", str(tmp_path)]) == 2
    assert "not a sweep folder (no sweep.json)" in capsys.readouterr().err


def test_spaces_are_found_by_name_or_path():
    assert resolve_space("smoke") == ROOT / "tune_spaces" / "smoke.yaml"
    assert resolve_space("tune_spaces/paper.yaml").name == "paper.yaml"
