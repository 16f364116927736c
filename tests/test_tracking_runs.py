"""How MLflow runs end (:class:`imascl_ray.tracking.TrackedRun`), on a real sqlite store.

A run's block decides: FINISHED when it returns, FAILED on an error, KILLED (tagged with the signal)
on an interrupt; a trial's run stopped by Tune (``SystemExit``) is left to the sweep. A trial stopped
by the scheduler ends KILLED and tagged ``imascl.stopped_early`` even when its torn-down process marked
the run FAILED first (seen under load), and the trial's own error path never overwrites the sweep's
KILLED. The sweep's parent run ends FAILED when ``Tuner.fit`` raises, KILLED when it is interrupted,
and takes its children still RUNNING with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.interrupts import Interrupted
from imascl_ray.tracking import TrackedRun
from imascl_ray.tracking.sweeps import close_unfinished_child
from imascl_ray.tracking.tags import INTERRUPTED, STOPPED, TRIAL

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


@pytest.fixture()
def runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("sweep")
    parent = client.create_run(experiment).info.run_id

    def child(trial_id: str) -> str:
        tags = {"mlflow.parentRunId": parent, TRIAL: trial_id}
        return client.create_run(experiment, tags=tags).info.run_id

    return uri, client, parent, child


def _close_quietly(uri: str, run_id: str, status: str) -> None:
    """What a trial's error path does to its run."""
    TrackedRun(uri, run_id, nested=True).end_quickly(status)


def status_and_tag(client: MlflowClient, run_id: str) -> tuple[str, str | None]:
    run = client.get_run(run_id)
    return run.info.status, run.data.tags.get(STOPPED)


def test_a_stopped_trial_ends_killed_whoever_closes_its_run_first(runs):
    uri, client, parent, child = runs
    # the sweep first, then the trial's teardown reaches run_training's error path
    first = child("a")
    close_unfinished_child(uri, parent, "a", failed=False)
    _close_quietly(uri, first, "FAILED")
    assert status_and_tag(client, first) == ("KILLED", "true")
    # the trial's teardown first, then the sweep
    second = child("b")
    _close_quietly(uri, second, "FAILED")
    close_unfinished_child(uri, parent, "b", failed=False)
    assert status_and_tag(client, second) == ("KILLED", "true")


def test_failed_and_finished_trials_keep_their_status(runs):
    uri, client, parent, child = runs
    failed = child("a")
    _close_quietly(uri, failed, "FAILED")
    close_unfinished_child(uri, parent, "a", failed=True)
    assert status_and_tag(client, failed) == ("FAILED", None)
    died = child("b")  # a trial that died before it could close its run
    close_unfinished_child(uri, parent, "b", failed=True)
    assert status_and_tag(client, died) == ("FAILED", None)
    finished = child("c")
    client.set_terminated(finished, status="FINISHED")
    close_unfinished_child(uri, parent, "c", failed=False)
    assert status_and_tag(client, finished) == ("FINISHED", None)
    assert close_unfinished_child(uri, parent, "no-such-trial", failed=False) is None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_sweeps_parent_run_ends_failed_or_killed_when_fit_raises(runs, monkeypatch, tmp_path, error):
    from types import SimpleNamespace

    from ray import tune as real_tune

    from imascl_ray.preparation import SharedTeacherCache
    from imascl_ray.tune import sweep
    from imascl_ray.tune.space import load_space
    from imascl_ray.tune.trainable import TrialSpec

    class FailingTuner:
        """A ``tune.Tuner`` whose ``fit`` raises, as when the driver loses its cluster or is interrupted."""

        def __init__(self, *args, **kwargs) -> None:
            pass

        def fit(self):
            raise error("the Ray cluster went away")

    uri, client, parent, _ = runs
    monkeypatch.setattr(
        sweep,
        "tune",
        SimpleNamespace(
            Tuner=FailingTuner,
            with_parameters=lambda trainable, **_: trainable,  # no object store: nothing runs
            with_resources=lambda trainable, _: trainable,
            TuneConfig=real_tune.TuneConfig,
            RunConfig=real_tune.RunConfig,
        ),
    )
    space = load_space(SPACES / "smoke.yaml")
    space.max_concurrent_trials = 1  # no cluster to size it from
    shared = SharedTeacherCache(str(tmp_path / "cache"), str(tmp_path / "sentences.json"))
    spec = TrialSpec(space, "sweep", str(tmp_path), parent, shared, {})
    running_child = client.create_run(
        client.get_run(parent).info.experiment_id, tags={"mlflow.parentRunId": parent, TRIAL: "t"}
    ).info.run_id
    with pytest.raises(error, match="went away"):
        sweep._fit_and_finish(spec, TrackedRun(uri, parent, close_children=True), restore=False)
    assert client.get_run(parent).info.status == ("FAILED" if error is RuntimeError else "KILLED")
    assert client.get_run(running_child).info.status == "KILLED"  # no RUNNING ghost under the parent


def _run(client: MlflowClient, uri: str, **kwargs) -> TrackedRun:
    experiment = client.get_experiment_by_name("sweep").experiment_id
    return TrackedRun(uri, client.create_run(experiment).info.run_id, **kwargs)


@pytest.mark.parametrize(
    ("raised", "nested", "status", "tag"),
    [
        (None, False, "FINISHED", None),
        (RuntimeError("boom"), False, "FAILED", None),
        (KeyboardInterrupt(), False, "KILLED", "SIGINT"),
        (Interrupted(15), False, "KILLED", "SIGTERM"),
        (SystemExit(1), False, "KILLED", "exit"),
        (SystemExit(1), True, "RUNNING", None),  # Tune stopped the trial: the sweep closes its run
        (RuntimeError("boom"), True, "FAILED", None),
    ],
)
def test_a_tracked_run_ends_as_its_block_does(runs, raised, nested, status, tag):
    uri, client, _, _ = runs
    run = _run(client, uri, nested=nested)
    if raised is None:
        with run:
            pass
    else:
        with pytest.raises(type(raised)), run:
            raise raised
    ended = client.get_run(run.run_id)
    assert ended.info.status == status
    assert ended.data.tags.get(INTERRUPTED) == tag


def test_a_sweep_whose_trials_all_failed_ends_failed_and_a_closed_run_is_never_overwritten(runs):
    uri, client, _, _ = runs
    run = _run(client, uri)
    with run:
        run.fail_on_exit()
    assert client.get_run(run.run_id).info.status == "FAILED"
    killed = _run(client, uri)
    client.set_terminated(killed.run_id, status="KILLED")
    with pytest.raises(RuntimeError), killed:
        raise RuntimeError("the torn-down trial's error path, after the sweep closed its run")
    assert client.get_run(killed.run_id).info.status == "KILLED"


def test_closing_after_an_interrupt_is_quick_when_the_store_is_away(tmp_path):
    """``ray job stop`` kills the driver 3 s after its SIGTERM: closing must not wait for a dead store."""
    import time

    run = TrackedRun("http://127.0.0.1:9", "0" * 32)  # nothing listens on port 9
    started = time.monotonic()
    with pytest.raises(Interrupted), run:
        raise Interrupted(15)
    assert time.monotonic() - started < 3.0
