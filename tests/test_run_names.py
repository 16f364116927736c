"""Run names: default names never collide, and a name that has checkpoints is not reused by surprise.

(The end-to-end case, two real runs under one name and a ``--resume``, is in test_train_tracking.py.)
"""

from __future__ import annotations

import pytest

from imascl_ray import cli
from imascl_ray.config import load_config
from imascl_ray.errors import InputError
from imascl_ray.train.run_names import (
    RAY_RUN_SNAPSHOT,
    check_new_run,
    ray_snapshot,
    remember_mlflow_run,
    remembered_mlflow_run,
)
from imascl_ray.train.trainer import default_run_name


def test_default_names_started_in_the_same_second_differ():
    config = load_config(None, [])
    names = {default_run_name(config) for _ in range(50)}
    assert len(names) == 50
    assert len({name.rsplit("-", 1)[0][:-6] for name in names}) <= 2  # the same stem (a minute may tick)
    assert all(config.data.pair_set in name for name in names)


def test_a_name_with_a_ray_snapshot_is_refused_in_one_line_that_says_how_to_go_on(tmp_path):
    storage, run_dir = tmp_path / "ray", tmp_path / "runs" / "mine"
    check_new_run("mine", str(storage), run_dir)  # nothing there yet
    (storage / "mine").mkdir(parents=True)
    (storage / "mine" / RAY_RUN_SNAPSHOT).write_text("{}")
    with pytest.raises(InputError) as refused:
        check_new_run("mine", str(storage), run_dir)
    message = str(refused.value)
    assert "'mine'" in message and str(storage / "mine") in message
    assert "--resume" in message and "tracking.run_name" in message and "\n" not in message
    check_new_run("other", str(storage), tmp_path / "runs" / "other")


def test_storage_given_as_a_uri_is_looked_at_through_its_file_system(tmp_path):
    (tmp_path / "mine").mkdir()
    assert ray_snapshot(f"file://{tmp_path}", "mine") is None
    (tmp_path / "mine" / RAY_RUN_SNAPSHOT).write_text("{}")
    assert ray_snapshot(f"file://{tmp_path}", "mine") == f"file://{tmp_path}/mine/{RAY_RUN_SNAPSHOT}"


def test_a_run_folder_that_started_its_mlflow_run_counts_as_taken_and_keeps_the_id(tmp_path):
    run_dir = tmp_path / "runs" / "mine"
    assert remembered_mlflow_run(run_dir) is None
    remember_mlflow_run(run_dir, "abc123")
    assert remembered_mlflow_run(run_dir) == "abc123"
    with pytest.raises(InputError, match="'mine' exists already"):
        check_new_run("mine", str(tmp_path / "ray"), run_dir)


def test_resume_without_a_run_name_is_an_input_error(capsys):
    assert cli.main(["train", "quickstart", "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("--resume needs the run's name: add tracking.run_name=NAME")
    assert len(error.splitlines()) == 1
