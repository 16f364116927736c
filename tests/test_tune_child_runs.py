"""How a trial's MLflow child run ends, whichever of the sweep and the dying trial closes it first.

On a real sqlite store: a trial stopped by the scheduler ends KILLED and tagged ``imascl.stopped_early``
even when its torn-down process marked the run FAILED first (seen under load: the test suite's smoke
sweep read FAILED), and the trial's own error path never overwrites the sweep's KILLED.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.train.trainer import _close_quietly
from imascl_ray.tune.tracking import TAG_STOPPED, TAG_TRIAL, close_unfinished_child


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
