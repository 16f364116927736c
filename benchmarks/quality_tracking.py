"""The quality study's own MLflow records, through :mod:`imascl_ray.tracking`: one parent run per study,
its trained runs nested under it, and the Pareto figure and the result logged into it (or into a
sweep's parent run)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imascl_ray.tracking import TrackedRun
from imascl_ray.tracking.client import client
from imascl_ray.tracking.models import experiment_id, log_figure


def start_study_run(uri: str, experiment: str, name: str, params: Mapping[str, Any]) -> str:
    """A new MLflow run ``name`` in ``experiment`` (made if missing; a local store keeps its artifacts
    beside it) with ``params``; returns its id."""
    tags = {"imascl.benchmark": "quality"}
    run = client(uri).create_run(experiment_id(uri, experiment), run_name=name, tags=tags)
    TrackedRun(uri, run.info.run_id).log_params({key: str(value)[:500] for key, value in params.items()})
    return run.info.run_id


def log_figure_to_mlflow(uri: str, run_id: str, figure, artifact_file: str) -> None:
    """Log ``figure`` into the MLflow run ``run_id`` (the study's or a sweep's parent run) at ``uri``."""
    log_figure(uri, run_id, figure, artifact_file)


def finish_study_run(uri: str, run_id: str, result: Mapping[str, Any], status: str = "FINISHED") -> None:
    """Log the result (``quality.json``) and its headline numbers into the study's run, and end it."""
    run = TrackedRun(uri, run_id)
    client(uri).log_dict(run_id, json.loads(json.dumps(result, default=str)), "quality.json")
    headline = result.get("headline", {})
    run.log_metrics(
        {k: float(v) for k, v in headline.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    )
    run.finish(status)


def end_study_run(uri: str, run_id: str, status: str) -> None:
    """End the study's run as ``status`` (``FAILED``, ``KILLED``) when the study stops early."""
    TrackedRun(uri, run_id).end_quickly(status)
