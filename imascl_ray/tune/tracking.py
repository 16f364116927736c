"""MLflow for a sweep: one parent run, one nested child run per trial (MLflow only; no Ray).

The parent run holds the fixed config as params, each searched key's distribution as a
``search.<key>`` param, and tags naming the space file, the git commit and the sweep; at the end the
best value, the trial counts, the table and the best config. A child run is an ordinary training run
(:func:`imascl_ray.train.trainer.start_mlflow_run`: the trial's full config as params, metric
histories from rank 0, the evaluation, the model) nested under the parent with the
``mlflow.parentRunId`` tag, plus ``searched.<key>`` params holding the trial's sampled values, so the
compare view lines tau, lambda and lr up against the validation and evaluation metrics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imascl_ray.config import Config

TAG_SWEEP = "imascl.sweep"
TAG_SPACE = "imascl.space"
TAG_COMMIT = "imascl.git_commit"
TAG_TRIAL = "imascl.trial_id"
TAG_SEARCHED = "imascl.searched"
TAG_STOPPED = "imascl.stopped_early"


def git_commit(directory: str | Path | None = None) -> str:
    """The commit of the code that runs (the package's checkout), or ``unknown`` outside a git tree."""
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_parent_run(
    config: Config, sweep_name: str, distributions: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    """The sweep's parent run: the fixed config and ``search.<key>`` distributions as params."""
    from mlflow.entities import Param

    from imascl_ray.train.trainer import mlflow_uri, start_mlflow_run

    run_id = start_mlflow_run(config, sweep_name, tags=dict(tags))
    params = [Param(f"search.{key}", text) for key, text in distributions.items()]
    if params:
        _client(mlflow_uri(config)).log_batch(run_id, params=params)
    return run_id


def find_child_run(uri: str, parent_run_id: str, trial_id: str) -> str | None:
    """The child run a trial made before (a resumed sweep continues it instead of starting another)."""
    client = _client(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{TAG_TRIAL}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_child_run(
    config: Config,
    run_name: str,
    *,
    parent_run_id: str,
    trial_id: str,
    searched: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    """A trial's child run (or its earlier one, reopened): full config, ``searched.<key>`` params, tags."""
    from mlflow.entities import Param, RunStatus

    from imascl_ray.train.trainer import mlflow_uri, start_mlflow_run

    uri = mlflow_uri(config)
    existing = find_child_run(uri, parent_run_id, trial_id)
    if existing is not None:
        _client(uri).update_run(existing, status=RunStatus.to_string(RunStatus.RUNNING))
        return existing
    run_tags = {**tags, TAG_TRIAL: trial_id, TAG_SEARCHED: ",".join(searched)}
    run_id = start_mlflow_run(config, run_name, tags=run_tags, parent_run_id=parent_run_id)
    params = [Param(f"searched.{key}", str(value)) for key, value in searched.items()]
    if params:
        _client(uri).log_batch(run_id, params=params)
    return run_id


def close_unfinished_child(uri: str, parent_run_id: str, trial_id: str, *, failed: bool) -> str | None:
    """Mark a trial's child run that is still RUNNING (its trial was stopped by the scheduler, or died)
    as KILLED (tagged ``imascl.stopped_early``) or FAILED; returns the run id, if any.

    A stopped trial's run may already read FAILED: the trial's process, torn down by Tune, can reach
    :func:`imascl_ray.train.trainer.run_training`'s error path first. Tune reported no error for it, so
    that FAILED is the stop's doing and becomes KILLED too (found under load in the test suite).
    """
    run_id = find_child_run(uri, parent_run_id, trial_id)
    if run_id is None:
        return None
    client = _client(uri)
    status = client.get_run(run_id).info.status
    if status != "RUNNING" and (failed or status != "FAILED"):
        return run_id
    if not failed:
        client.set_tag(run_id, TAG_STOPPED, "true")
    client.set_terminated(run_id, status="FAILED" if failed else "KILLED")
    return run_id


def reopen_run(uri: str, run_id: str) -> None:
    """Set a run back to RUNNING (a resumed sweep's parent)."""
    _client(uri).update_run(run_id, status="RUNNING")


def finish_parent_run(
    uri: str,
    run_id: str,
    *,
    metrics: Mapping[str, float],
    artifacts: list[Path],
    failed: bool,
) -> None:
    """Log the sweep's summary metrics and files to its parent run and close it."""
    from imascl_ray.eval.tracking import log_metrics

    client = _client(uri)
    if metrics:
        log_metrics(metrics, run_id=run_id, tracking_uri=uri)
    for path in artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
