"""Ctrl-C and SIGTERM (``ray job stop``, preemption) end a run cleanly, and ``--resume`` continues it.

``imascl-ray train`` runs in its own process with its own local Ray cluster, as a user's shell starts
it; the test sends the signal to that process by its id once the run has checkpointed twice, then
checks what the README promises: the process prints ``interrupted`` (no traceback) and exits 130 for
SIGINT, 143 for SIGTERM; its MLflow run is KILLED, tagged with the signal, not left RUNNING; and
``imascl-ray train ... --resume`` continues from the last checkpoint into the same MLflow run, which then
ends FINISHED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.config import dump_yaml, load_config
from imascl_ray.data import write_corpus
from imascl_ray.interrupts import Interrupted, call_interruptibly
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tracking.tags import INTERRUPTED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_reaches_the_main_thread_while_a_call_runs_in_a_helper_thread(signum, code):
    """What lets imascl-ray, not Ray Train's or Tune's own handler, decide what a signal does; each
    signal's exit code. (End to end, one signal each: Ctrl-C on a train run below, SIGTERM on a sweep in
    tests/test_tune_resume.py; both go through this handler, installed again after ``ray.init``.)"""
    from imascl_ray import interrupts

    interrupts.reset()
    previous = signal.getsignal(signal.SIGTERM)
    interrupts.raise_on_signals()
    try:
        started = time.monotonic()
        with pytest.raises(Interrupted) as caught:
            call_interruptibly(lambda: (os.kill(os.getpid(), signum), time.sleep(30)))
        assert time.monotonic() - started < 5
        assert (caught.value.signal_name, caught.value.exit_code) == (signal.Signals(signum).name, code)
        assert call_interruptibly(lambda: 42) == 42
        with pytest.raises(ValueError, match="inner"):
            call_interruptibly(lambda: (_ for _ in ()).throw(ValueError("inner")))
    finally:
        interrupts.reset()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.slow
def test_an_interrupted_train_run_ends_killed_exits_128_plus_signal_and_resumes(tmp_path):
    """Ctrl-C (SIGINT) on ``imascl-ray train``; SIGTERM end to end: the sweep's test (test_tune_resume)."""
    signum, code = signal.SIGINT, 130
    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    corpus = write_corpus(synthetic_parallel_corpus(400), tmp_path / "corpus.parquet")
    settings = [
        f"model.name={model}",
        f"data.corpus={corpus}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        "data.validation_pairs=50",
        "data.test_pairs=0",
        "model.max_length=16",
        "teacher.max_length=16",
        "schedule.global_batch_size=8",
        "schedule.max_steps=2000",  # far more than the test waits for
        "schedule.eval_every=2",
        "schedule.log_every=1",
        "scaling.num_workers=1",
        "scaling.cpus_per_worker=1",
        "eval.suite=none",
        f"tracking.output_dir={tmp_path / 'out'}",
        "tracking.run_name=stopped",
    ]
    recipe = tmp_path / "recipe.yaml"
    dump_yaml(load_config(None, settings), recipe)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "imascl_ray", "train", str(recipe)]
    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            if log_path.read_text().count("validation at step") >= 2:  # two checkpoints reported
                break
            time.sleep(0.2)
        else:
            driver.kill()
            pytest.fail(f"the run never validated twice: {log_path.read_text()[-3000:]}")
        sent = time.monotonic()
        driver.send_signal(signum)
        returncode = driver.wait(timeout=60)
    output = log_path.read_text()
    assert returncode == code, output[-3000:]
    assert time.monotonic() - sent < 30
    assert f"interrupted ({signal.Signals(signum).name})" in output
    assert "Traceback" not in output, output[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("imascl-ray").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags[INTERRUPTED] == signal.Signals(signum).name

    resumed = subprocess.run(
        [*command, "schedule.max_steps=12", "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming at epoch" in resumed.stdout + resumed.stderr
    (after,) = client.search_runs([client.get_experiment_by_name("imascl-ray").experiment_id])
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "train/loss")})
    assert steps[-1] == 12 and steps[0] == 1
