"""Every MLflow call of imascl-ray, behind one seam (MLflow only: no Ray, no training code).

- :mod:`~imascl_ray.tracking.credentials`: tracking URIs without their secrets (redaction, credentials
  moved to MLflow's environment variables, what every Ray worker must see).
- :mod:`~imascl_ray.tracking.client`: the one place an ``MlflowClient`` is made; retries for one-off calls.
- :mod:`~imascl_ray.tracking.runs`: :class:`TrackedRun`, a run whose context manager decides FINISHED /
  FAILED / KILLED in one place; :func:`start_run`, :func:`reopen_run`, :func:`store_uri`.
- :mod:`~imascl_ray.tracking.metrics`: rank 0's metrics queue (:class:`MetricsSink`) and flat metrics.
- :mod:`~imascl_ray.tracking.models`: artifact locations, the dataset input, figures, the logged model,
  the registry.
- :mod:`~imascl_ray.tracking.publish`: the model card, the MLflow model and the registered version of a
  finished run (once), and of a sweep's best trial.
- :mod:`~imascl_ray.tracking.sweeps`: a sweep's parent run and its nested child runs.
- :mod:`~imascl_ray.tracking.tags`: the tag names, defined once.

MLflow itself is imported inside the functions that call it, so importing this package costs nothing.
"""

from __future__ import annotations

from imascl_ray.tracking.credentials import redact_text, redact_uri, without_credentials
from imascl_ray.tracking.runs import TrackedRun, reopen_run, start_run, store_uri

__all__ = [
    "TrackedRun",
    "redact_text",
    "redact_uri",
    "reopen_run",
    "start_run",
    "store_uri",
    "without_credentials",
]
