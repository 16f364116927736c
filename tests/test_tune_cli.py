"""``imascl-ray tune``: arguments, and bad input refused in one line before Ray starts."""

from __future__ import annotations

import os
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
            # every shipped space, by name, in order
            "no such search-space file (known spaces: "
            + ", ".join(sorted(path.stem for path in (ROOT / "tune_spaces").glob("*.yaml")))
            + ")",
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


@pytest.mark.slow
def test_a_wheel_carries_the_named_spaces_and_finds_them_outside_a_checkout(tmp_path):
    """`pip install imascl-ray` then `imascl-ray tune quickstart`: the spaces are package data."""
    import zipfile

    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(ROOT),
            "-w",
            wheels,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("imascl_ray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "tune_spaces").glob("*.yaml")}
    assert shipped and {f"imascl_ray/tune_spaces/{name}" for name in shipped} <= names
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    elsewhere = tmp_path / "elsewhere"  # no tune_spaces/ here, no source tree on the path
    elsewhere.mkdir()
    code = (
        "import imascl_ray; from imascl_ray.commands.tune import resolve_space;"
        "from imascl_ray.tune.space import load_space;"
        "paths = [resolve_space(name) for name in ('quickstart', 'paper', 'paper_table5', 'smoke')];"
        "space = load_space(paths[-1]);"
        "print(imascl_ray.__file__); print(','.join(map(str, paths))); print(sorted(space.parameters))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    package, paths, parameters = out.stdout.splitlines()[-3:]
    assert package.startswith(str(installed))
    assert all(path.startswith(str(installed / "imascl_ray" / "tune_spaces")) for path in paths.split(","))
    assert "optim.lr" in parameters  # the smoke space loaded from the installed copy
