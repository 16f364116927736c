"""Resume: a sweep interrupted mid-sweep continues with ``imascl-ray tune --resume PATH``.

The driver runs as a subprocess (``python -m imascl_ray tune SPACE ...``) with a local Ray cluster of its
own; the test sends it SIGTERM (by its process id) once the first trial is finished in Tune's saved
state and the second has validated at least once, checks that the sweep ended KILLED, then resumes.
The space is the smoke space without early stopping and with longer trials, and Tune saves its state
every second, so that this moment lasts many seconds instead of the one or two between a stopped
trial's first and last report.

The finished trial is not trained again, the interrupted one continues from its last checkpoint, the
third one runs, and the MLflow record has one parent and one child run per trial. (One test for both:
the interrupted sweep and its resume were two runs of ~90 s each, issue 24.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tune import results
from imascl_ray.tune.trainable import read_events

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    corpus = synthetic_parallel_corpus(600, pair_names=("en-fr", "en-ru"))
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.1),
        "corpus": write_corpus(corpus, folder / "corpus.parquet"),
    }


@pytest.fixture
def space(tmp_path) -> Path:
    """The smoke space, its trials 24 steps long and never stopped early (a wide window to kill in)."""
    settings = yaml.safe_load((ROOT / "tune_spaces" / "smoke.yaml").read_text())
    settings["overrides"]["schedule"]["max_steps"] = 24
    settings["scheduler"] = {"name": "fifo"}
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def tune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imascl_ray", "tune", *args]


def saved_statuses(sweep: Path) -> dict[str, str]:
    """Trial id -> status in Tune's latest saved experiment state (what a resume starts from)."""
    states = sorted((sweep / "tune").glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten
        return {}
    trials = (json.loads(entry[0]) for entry in data["trial_data"])
    return {trial["trial_id"]: trial["status"] for trial in trials}


def validations(sweep: Path, trial_id: str) -> int:
    """How many times the trial validated (and checkpointed), from the sweep's events."""
    return sum(e["trial_id"] == trial_id and e["event"] == "validation" for e in read_events(sweep))


def test_a_sweep_interrupted_mid_trial_ends_killed_and_resumes_without_rerunning_finished_trials(
    assets, space, tmp_path
):
    """SIGTERM (``ray job stop``, preemption; issue 23, item 1) once the first trial is finished in Tune's
    saved state and the second has validated: ``interrupted (SIGTERM)``, no traceback, exit 143, the
    parent run and every child still RUNNING end KILLED. ``tune --resume`` then finishes the sweep: the
    finished trial is not trained again, the interrupted one continues from its Train run's last
    checkpoint, the third runs. (Ctrl-C end to end: tests/test_interrupts.py, on a train run; both
    signals' handler and exit codes: its first test.)"""
    signum, code = signal.SIGTERM, 143
    output = tmp_path / "out"
    overrides = [
        f"model.name={assets['model']}",
        f"data.corpus={assets['corpus']}",
        f"tracking.output_dir={output}",
        "tracking.experiment=tune-resume",
    ]
    # Tune saves its experiment state at most every 10 s by default; the test reads that state.
    env = os.environ | {"PYTHONPATH": str(ROOT), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            tune_command(str(space), *overrides), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # Interrupt when a trial is finished in Tune's saved state and a later one is running and
            # has validated (so its Train run has a checkpoint to resume from).
            sweep, deadline = None, time.monotonic() + 600  # generous: a shared machine is slow
            while time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.5)
                sweeps = list((output / "sweeps").glob("smoke-*"))
                if not sweeps:
                    continue
                sweep = sweeps[0]
                started = [e["trial_id"] for e in read_events(sweep) if e["event"] == "start"]
                saved = saved_statuses(sweep)
                running = started[-1] if started else None
                if (
                    len(started) >= 2
                    and saved.get(started[0]) == "TERMINATED"
                    and saved.get(running) != "TERMINATED"
                    and validations(sweep, running) >= 1
                ):
                    break
            else:
                pytest.fail(f"the sweep never got that far: {log_path.read_text()[-3000:]}")
            sent = time.monotonic()
            driver.send_signal(signum)
            returncode = driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep did not stop within 60 s: {log_path.read_text()[-3000:]}")
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=60)
    first = log_path.read_text()
    assert returncode == code, first[-3000:]
    assert time.monotonic() - sent < 60
    assert f"interrupted ({signal.Signals(signum).name})" in first, first[-3000:]
    assert "Traceback" not in first, first[-4000:]

    state = json.loads((sweep / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=state["mlflow_uri"])

    def parent_and_children():
        parent = client.get_run(state["parent_run_id"])
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{state['parent_run_id']}'",
        )
        return parent, children

    parent, children = parent_and_children()
    assert parent.info.status == "KILLED"
    statuses = {run.data.tags["imascl.trial_id"]: run.info.status for run in children}
    assert statuses.get(running) == "KILLED", statuses  # the interrupted trial's run
    assert set(statuses.values()) <= {"FINISHED", "KILLED"}, statuses  # none left RUNNING

    finished = [trial for trial in started if saved.get(trial) == "TERMINATED"]
    model_files = {
        trial: output / "runs" / f"{sweep.name}-{trial}" / "model" / "model.safetensors" for trial in finished
    }
    model_times = {trial: path.stat().st_mtime_ns for trial, path in model_files.items() if path.is_file()}
    assert started[0] in model_times  # the first trial finished and exported its model

    resumed = subprocess.run(
        tune_command("--resume", str(sweep)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    starts = [e["trial_id"] for e in read_events(sweep) if e["event"] == "start"]
    for trial in finished:
        assert starts.count(trial) == 1, trial  # never trained again
    for trial, mtime in model_times.items():
        assert model_files[trial].stat().st_mtime_ns == mtime
    assert starts.count(running) == 2  # restarted once, from its Train run's last checkpoint
    assert "resuming at epoch" in resumed.stdout + resumed.stderr
    assert len(set(starts)) == 3  # and the remaining trials ran

    with open(sweep / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert {row["status"] for row in rows} <= {results.FINISHED, results.STOPPED}
    assert next(row for row in rows if row["trial"] == started[0])["status"] == results.FINISHED
    assert (sweep / "best-config.yaml").is_file() and (sweep / "best-model" / "model.safetensors").is_file()

    # MLflow: the parent is finished; one child per trial (the interrupted trial kept its run).
    parent, children = parent_and_children()
    assert parent.info.status == "FINISHED"
    assert sorted(run.data.tags["imascl.trial_id"] for run in children) == sorted(set(starts))
    assert {run.info.status for run in children} <= {"FINISHED", "KILLED"}
