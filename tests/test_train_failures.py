"""Issue 23, items 5 and 9: failures that a retry cannot cure end a run at once, and a run is quiet when
another Ray cluster runs on the machine.

Every run here is ``imascl-ray train`` in its own process with its own local Ray cluster, as a user's
shell starts it. ``scaling.max_failures=5`` makes the point of item 5: an error that a
restart cannot fix (a damaged checkpoint on ``--resume``, an :class:`~imascl_ray.errors.InputError`
raised in a worker) must end the run at once however many retries are allowed, with one line naming the
file and exit code 2, its MLflow run FAILED. A worker that crashes still restarts and resumes: see
``tests/test_train_ray.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.config import dump_yaml, load_config
from imascl_ray.data import write_corpus
from imascl_ray.engine.faults import FAULT_AT_STEP, FAULT_KIND, FAULT_RANK
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.0),
        "corpus": write_corpus(synthetic_parallel_corpus(300), folder / "corpus.parquet"),
    }


def write_recipe(assets: dict[str, Path], folder: Path, *overrides: str) -> Path:
    settings = [
        f"model.name={assets['model']}",
        f"data.corpus={assets['corpus']}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        "data.validation_pairs=40",
        "data.test_pairs=0",
        "model.max_length=16",
        "teacher.max_length=16",
        "schedule.global_batch_size=8",
        "schedule.max_steps=4",
        "schedule.eval_every=2",
        "schedule.log_every=1",
        "scaling.num_workers=1",
        "scaling.cpus_per_worker=1",
        "scaling.max_failures=5",
        "eval.suite=none",
        f"tracking.output_dir={folder / 'out'}",
        "tracking.run_name=failing",
        *overrides,
    ]
    recipe = folder / "recipe.yaml"
    dump_yaml(load_config(None, settings), recipe)
    return recipe


def train(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180):
    """``imascl-ray train ARGS`` in ``folder``: (exit code, stdout + stderr, stderr lines, seconds)."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "imascl_ray", "train", *args],
        cwd=folder,
        env=os.environ | {"PYTHONPATH": str(ROOT)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    return process.returncode, process.stdout + process.stderr, lines, time.monotonic() - started


def the_run(folder: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("imascl-ray").experiment_id])
    return run


def error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("imascl-ray train: error: ")]


def test_a_run_beside_another_cluster_is_quiet_and_its_damaged_checkpoint_ends_the_resume_at_once(
    assets, tmp_path
):
    """Item 9, then item 5. The first run trains beside a second Ray cluster on the machine: Ray Train's
    PlacementGroupCleaner (in this run's own cluster) found two clusters when it looked for the state
    API, and its thread died with a 30-line traceback in the run's output. Its checkpoints are then
    damaged, and ``--resume`` must end at once with one line naming the file."""
    from test_ray_job_submit import started_head

    recipe = write_recipe(assets, tmp_path)
    with started_head():
        code, output, _, _ = train(tmp_path, str(recipe))
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-4000:]
    assert "PlacementGroupCleaner" not in output, output[-4000:]
    checkpoints = [
        path for path in (tmp_path / "out" / "ray" / "failing").glob("checkpoint_*") if path.is_dir()
    ]
    assert checkpoints, output[-2000:]
    for checkpoint in checkpoints:  # whichever Ray resumes from is damaged
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    # Before the fix: 6 tries, each restart reading the same damaged file, then a traceback.
    code, output, lines, seconds = train(tmp_path, str(recipe), "schedule.max_steps=8", "--resume")
    assert code == 2, output[-3000:]
    (line,) = error_lines(lines)
    assert "model.safetensors" in line and "checkpoint" in line, line
    assert "tracking.run_name" in line, line  # what to do about it
    assert "Traceback" not in output, output[-3000:]
    assert seconds < 90, seconds
    assert the_run(tmp_path).info.status == "FAILED"


def test_an_input_error_in_a_worker_ends_the_run_at_once(assets, tmp_path):
    recipe = write_recipe(assets, tmp_path)
    fault = {FAULT_AT_STEP: "1", FAULT_RANK: "0", FAULT_KIND: "input-error"}
    code, output, lines, seconds = train(tmp_path, str(recipe), env=fault)
    assert code == 2, output[-3000:]
    (line,) = error_lines(lines)
    assert FAULT_KIND in line, line
    assert "Traceback" not in output, output[-3000:]
    fired = (tmp_path / "out" / "runs" / "failing").glob("failed-at-step-*")
    assert [path.read_text().count("\n") for path in fired] == [1]  # no retry
    assert seconds < 90, seconds
    assert the_run(tmp_path).info.status == "FAILED"
