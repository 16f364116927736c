"""Evaluation metrics to MLflow: flat ``{"tatoeba/fra-eng/acc": 0.95, ...}`` dicts logged to one run.

Used by ``imascl-ray eval --mlflow-run-id/--mlflow-experiment`` and, after training, to put the
evaluation of the exported model into the training run, so runs compare on the paper's metrics.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping

from imascl_ray.errors import InputError

_ALLOWED = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_key(key: str) -> str:
    """``key`` with characters MLflow refuses in metric names replaced by ``_``."""
    return _ALLOWED.sub("_", key)


def log_metrics(
    metrics: Mapping[str, float],
    *,
    run_id: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    step: int = 0,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log ``metrics`` to the MLflow run ``run_id``, or to a new run in ``experiment``; return the run id.

    Non-finite values (an undefined Spearman) are skipped: MLflow stores NaN but the UI cannot sort
    or plot it. ``tracking_uri`` defaults to MLflow's own default (``MLFLOW_TRACKING_URI``).
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    if run_id is None and experiment is None:
        raise InputError("MLflow logging needs a run id or an experiment name")
    client = MlflowClient(tracking_uri=tracking_uri)
    if run_id is None:
        assert experiment is not None
        from imascl_ray.mlflow_model import experiment_id as find_experiment

        # A new experiment in a local sqlite store keeps its artifacts next to the database, not in
        # ./mlruns of the current folder.
        experiment_id = find_experiment(client.tracking_uri, experiment)
        run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
        created = True
    else:
        try:
            client.get_run(run_id)
        except Exception as error:
            raise InputError(f"MLflow run {run_id} not found at {client.tracking_uri} ({error})") from error
        created = False
    timestamp = int(time.time() * 1000)
    entries = [
        Metric(metric_key(key), float(value), timestamp, step)
        for key, value in metrics.items()
        if value is not None and math.isfinite(float(value))
    ]
    for start in range(0, len(entries), 1000):  # MLflow's limit on metrics per batch
        client.log_batch(run_id, metrics=entries[start : start + 1000])
    if tags:
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    if created:
        client.set_terminated(run_id)
    return run_id
