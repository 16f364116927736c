"""MLflow for a sweep: one parent run, one nested child run per trial (MLflow only; no Ray).

The parent run holds the fixed config as params, each searched key's distribution as a
``search.<key>`` param, and tags naming the space file, the git commit and the sweep; at the end the
best value, the trial counts, the table and the best config. A child run is an ordinary training run
(:func:`imascl_ray.tracking.runs.start_run`: the trial's full config as params, metric histories from
rank 0, the evaluation, the model) nested under the parent with the ``mlflow.parentRunId`` tag, plus
``searched.<key>`` params holding the trial's sampled values, so the compare view lines tau, lambda and
lr up against the validation and evaluation metrics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imascl_ray.config import Config
from imascl_ray.tracking import tags as tag
from imascl_ray.tracking.client import client
from imascl_ray.tracking.runs import TrackedRun, start_run, store_uri


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


def start_parent_run(
    config: Config, sweep_name: str, distributions: Mapping[str, str], tags: Mapping[str, str]
) -> TrackedRun:
    """The sweep's parent run: the fixed config and ``search.<key>`` distributions as params; failing
    or interrupted, it closes its children still RUNNING too."""
    run = start_run(config, sweep_name, tags=dict(tags))
    run.log_params({f"search.{key}": text for key, text in distributions.items()})
    run.close_children = True
    return run


def parent_run(uri: str, run_id: str) -> TrackedRun:
    """A sweep's existing parent run, set back to RUNNING (a resumed sweep)."""
    client(uri).update_run(run_id, status="RUNNING")
    return TrackedRun(uri, run_id, close_children=True)


def find_child_run(uri: str, parent_run_id: str, trial_id: str) -> str | None:
    """The child run a trial made before (a resumed sweep continues it instead of starting another)."""
    mlflow = client(uri)
    parent = mlflow.get_run(parent_run_id)
    runs = mlflow.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{tag.PARENT_RUN}` = '{parent_run_id}' and tags.`{tag.TRIAL}` = '{trial_id}'",
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
) -> TrackedRun:
    """A trial's child run (or its earlier one, reopened): full config, ``searched.<key>`` params, tags."""
    uri = store_uri(config)
    existing = find_child_run(uri, parent_run_id, trial_id)
    if existing is not None:
        client(uri).update_run(existing, status="RUNNING")
        return TrackedRun(uri, existing, nested=True)
    run_tags = {**tags, tag.TRIAL: trial_id, tag.SEARCHED: ",".join(searched)}
    run = start_run(config, run_name, tags=run_tags, parent_run_id=parent_run_id)
    run.log_params({f"searched.{key}": value for key, value in searched.items()})
    return run


def close_unfinished_child(uri: str, parent_run_id: str, trial_id: str, *, failed: bool) -> str | None:
    """Mark a trial's child run that is still RUNNING (its trial was stopped by the scheduler, or died)
    as KILLED (tagged ``imascl.stopped_early``) or FAILED; returns the run id, if any.

    A stopped trial's run may already read FAILED: the trial's process, torn down by Tune, can reach
    its run's error path first. Tune reported no error for it, so that FAILED is the stop's doing and
    becomes KILLED too (found under load in the test suite).
    """
    run_id = find_child_run(uri, parent_run_id, trial_id)
    if run_id is None:
        return None
    mlflow = client(uri)
    status = mlflow.get_run(run_id).info.status
    if status != "RUNNING" and (failed or status != "FAILED"):
        return run_id
    if not failed:
        mlflow.set_tag(run_id, tag.STOPPED, "true")
    mlflow.set_terminated(run_id, status="FAILED" if failed else "KILLED")
    return run_id


def log_sweep_summary(run: TrackedRun, *, metrics: Mapping[str, float], artifacts: list[Path]) -> None:
    """The sweep's summary metrics and files (table, CSV, best config) on its parent run."""
    if metrics:
        run.log_metrics(metrics)
    for path in artifacts:
        if path.is_file():
            run.log_artifact(path)
