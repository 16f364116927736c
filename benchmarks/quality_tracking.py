"""The quality study's own MLflow records: one parent run per study, its trained runs nested under it,
and the Pareto figure and the result logged into it (or into a sweep's parent run).

Every MLflow call of the quality study is here, so that it can move to :mod:`imascl_ray.tracking` in one
place; the trainer's own runs are made by ``run_training`` (``parent_run_id`` nests them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def start_study_run(uri: str, experiment: str, name: str, params: Mapping[str, Any]) -> str:
    """A new MLflow run ``name`` in ``experiment`` (made if missing) with ``params``; returns its id."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:  # a local store's artifacts beside it (MLflow's default is ./mlruns of the current folder)
        location = None
        if uri.startswith("sqlite:///"):
            location = str(Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts")
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    run = client.create_run(experiment_id, run_name=name, tags={"imascl.benchmark": "quality"})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, str(value)[:500])
    return run.info.run_id


def log_figure_to_mlflow(uri: str, run_id: str, figure, artifact_file: str) -> None:
    """Log ``figure`` into the MLflow run ``run_id`` (the study's or a sweep's parent run) at ``uri``."""
    _client(uri).log_figure(run_id, figure, artifact_file)


def finish_study_run(uri: str, run_id: str, result: Mapping[str, Any], status: str = "FINISHED") -> None:
    """Log the result (``quality.json``) and its headline numbers into the study's run, and end it."""
    client = _client(uri)
    client.log_dict(run_id, json.loads(json.dumps(result, default=str)), "quality.json")
    for name, value in result.get("headline", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            client.log_metric(run_id, name, float(value))
    client.set_terminated(run_id, status)


def end_study_run(uri: str, run_id: str, status: str) -> None:
    """End the study's run as ``status`` (``FAILED``, ``KILLED``) when the study stops early."""
    _client(uri).set_terminated(run_id, status)
