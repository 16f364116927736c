"""How a trial's MLflow child run ends, whichever of the sweep and the dying trial closes it first.

On a real sqlite store: a trial stopped by the scheduler ends KILLED and tagged ``imascl.stopped_early``
even when its torn-down process marked the run FAILED first (seen under load: the test suite's smoke
sweep read FAILED), and the trial's own error path never overwrites the sweep's KILLED. The sweep's
parent run ends FAILED when ``Tuner.fit`` raises, KILLED when it is interrupted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.train.trainer import _close_quietly
from imascl_ray.tune.tracking import TAG_STOPPED, TAG_TRIAL, close_unfinished_child

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


@pytest.fixture()
def runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("sweep")
    parent = client.create_run(experiment).info.run_id

    def child(trial_id: str) -> str:
        tags = {"mlflow.parentRunId": parent, TAG_TRIAL: trial_id}
        return client.create_run(experiment, tags=tags).info.run_id

    return uri, client, parent, child


def status_and_tag(client: MlflowClient, run_id: str) -> tuple[str, str | None]:
    run = client.get_run(run_id)
    return run.info.status, run.data.tags.get(TAG_STOPPED)


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
    with pytest.raises(error, match="went away"):
        sweep._fit_and_finish(spec, uri, restore=False)
    assert client.get_run(parent).info.status == ("FAILED" if error is RuntimeError else "KILLED")
