"""An MLflow run whose end state is decided in one place: :class:`TrackedRun`.

Every run imascl-ray makes (a training run, a sweep's parent, a trial's child) is used as a context
manager, and how the block ends says how the run ends::

    with start_run(config, "my-run") as run:   # RUNNING, the flattened config as params
        run.log_metrics({"eval/acc": 0.9})
        ...                                     # returns: FINISHED
                                                # an error: FAILED; Ctrl-C / SIGTERM: KILLED

- **FINISHED** when the block returns (or FAILED if the body said :meth:`TrackedRun.fail_on_exit`, as a
  sweep whose every trial failed does). Closing is retried, and a store that stays away is reported,
  never raised: what the run produced is written already.
- **FAILED** on an exception, **KILLED** on an interrupt (``KeyboardInterrupt``, which
  :class:`imascl_ray.interrupts.Interrupted` is: SIGINT or SIGTERM), tagged with the signal. Closing
  then is quick (a few seconds: ``ray job stop`` kills the driver 3 s after its SIGTERM) and never
  hides the error that ended the run.
- A nested run (a Tune trial's) ending with ``SystemExit`` (Tune stopping the trial) is left to the
  sweep, which closes it KILLED with :data:`~imascl_ray.tracking.tags.STOPPED`; a run whose status is
  no longer RUNNING (the sweep closed it first) is never overwritten.
- A sweep's parent (``close_children=True``) also closes its children still RUNNING, KILLED, when it
  fails or is interrupted: no RUNNING ghost stays behind in the UI.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imascl_ray.config import Config, flatten
from imascl_ray.tracking import tags as tag
from imascl_ray.tracking.client import call_with_retries, client
from imascl_ray.tracking.credentials import adopt_credentials, redact_text

logger = logging.getLogger(__name__)

#: How long closing a run may take after an error or an interrupt (``ray job stop`` waits 3 s).
QUICK_CLOSE_S = 2.5
#: How long closing a finished run keeps trying while the store is away.
FINISH_CLOSE_S = 300.0
#: MLflow's limit on params per ``log_batch`` call, and on a param value's length.
PARAMS_PER_BATCH, PARAM_LENGTH = 100, 6000


def store_uri(config: Config) -> str:
    """The tracking URI of ``config``: ``tracking.mlflow_uri``, else a sqlite store under
    ``tracking.output_dir`` (absolute: Ray workers run in other folders). Credentials written into the
    URI move to MLflow's environment variables (:func:`~imascl_ray.tracking.credentials.adopt_credentials`):
    the URI returned has none."""
    if config.tracking.mlflow_uri:
        return str(adopt_credentials(config.tracking.mlflow_uri))
    folder = Path(config.tracking.output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


@dataclass
class TrackedRun:
    """One MLflow run (``uri``, ``run_id``) and how it ends; see the module docstring."""

    uri: str
    run_id: str
    nested: bool = False
    """A sweep's trial: a ``SystemExit`` (Tune stopping it) leaves the run to the sweep."""
    close_children: bool = False
    """A sweep's parent: failing or interrupted, it closes its RUNNING children too."""
    status_on_success: str = "FINISHED"

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback) -> bool:
        if kind is None:
            self.finish(self.status_on_success)
        elif issubclass(kind, KeyboardInterrupt):
            signal_name = getattr(error, "signal_name", "SIGINT")
            self.end_quickly("KILLED", tags={tag.INTERRUPTED: signal_name})
        elif issubclass(kind, SystemExit):
            if not self.nested:
                self.end_quickly("KILLED", tags={tag.INTERRUPTED: "exit"})
        else:
            self.end_quickly("FAILED")
        return False  # the error goes on

    def fail_on_exit(self) -> None:
        """End the run FAILED even though the block returns (a sweep whose every trial failed)."""
        self.status_on_success = "FAILED"

    # ---- ending ---------------------------------------------------------------------------------------

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run as ``status``, trying again while the store is away; report, never raise."""
        try:
            call_with_retries(
                lambda: client(self.uri).set_terminated(self.run_id, status=status),
                what=f"closing MLflow run {self.run_id}",
                timeout_s=FINISH_CLOSE_S,
            )
        except Exception as error:
            logger.warning("[mlflow] run %s could not be closed %s (%s)", self.run_id, status, _short(error))

    def end_quickly(self, status: str, *, tags: Mapping[str, str] | None = None) -> None:
        """Close the run as ``status`` if it is still RUNNING (and its RUNNING children, for a sweep's
        parent), waiting at most :data:`QUICK_CLOSE_S`; a failure is one warning, never an exception that
        would hide the error or the interrupt that ended the run.

        The calls run in a helper thread that is left behind when the time is up: MLflow's own HTTP
        retries (minutes, by default) cannot be bounded from outside any other way."""
        failure: list[BaseException] = []

        def close() -> None:
            try:
                self._end_if_running(status, tags or {})
            except BaseException as error:  # reported by the waiting thread
                failure.append(error)

        closer = threading.Thread(target=close, name="mlflow-close", daemon=True)
        closer.start()
        closer.join(QUICK_CLOSE_S)
        if closer.is_alive():
            logger.warning(
                "[mlflow] run %s could not be marked %s within %.1f s (%s is away?)",
                self.run_id,
                status,
                QUICK_CLOSE_S,
                redact_text(self.uri),
            )
        elif failure:
            logger.warning("[mlflow] could not mark run %s %s: %s", self.run_id, status, _short(failure[0]))

    def _end_if_running(self, status: str, tags: Mapping[str, str]) -> None:
        mlflow = client(self.uri)
        runs = [self.run_id] + (self.running_children() if self.close_children else [])
        for run_id in runs:
            if mlflow.get_run(run_id).info.status != "RUNNING":
                continue
            for key, value in tags.items():
                mlflow.set_tag(run_id, key, value)
            mlflow.set_terminated(run_id, status="KILLED" if run_id != self.run_id else status)

    def running_children(self) -> list[str]:
        """The ids of this run's nested runs that are still RUNNING."""
        mlflow = client(self.uri)
        experiment = mlflow.get_run(self.run_id).info.experiment_id
        found = mlflow.search_runs(
            [experiment],
            filter_string=f"tags.`{tag.PARENT_RUN}` = '{self.run_id}' and attributes.status = 'RUNNING'",
        )
        return [run.info.run_id for run in found]

    # ---- logging --------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params in batches of MLflow's limit, values redacted of URI credentials and cut to its length."""
        from mlflow.entities import Param

        entries = [Param(key, redact_text(str(value))[:PARAM_LENGTH]) for key, value in params.items()]
        mlflow = client(self.uri)
        for start in range(0, len(entries), PARAMS_PER_BATCH):
            mlflow.log_batch(self.run_id, params=entries[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], *, step: int = 0) -> None:
        """Flat metrics (non-finite values skipped) at ``step``."""
        from imascl_ray.tracking.metrics import log_metrics

        log_metrics(metrics, run_id=self.run_id, tracking_uri=self.uri, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        mlflow = client(self.uri)
        for key, value in tags.items():
            mlflow.set_tag(self.run_id, key, str(value))

    def log_figure(self, figure: object, artifact: str) -> None:
        """A matplotlib figure as the artifact ``artifact`` (e.g. ``figures/before_after.png``)."""
        from imascl_ray.tracking.models import log_figure

        log_figure(self.uri, self.run_id, figure, artifact)

    def log_artifact(self, path: str | Path) -> None:
        client(self.uri).log_artifact(self.run_id, str(path))

    def log_training_corpus(self, path: str | Path, name: str) -> None:
        """The training split (a Parquet file) as the run's dataset input (the runs table's Dataset)."""
        from imascl_ray.tracking.models import log_training_corpus

        log_training_corpus(self.uri, self.run_id, path, name)

    @property
    def experiment_id(self) -> str:
        return client(self.uri).get_run(self.run_id).info.experiment_id


def start_run(
    config: Config,
    run_name: str,
    *,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> TrackedRun:
    """A new RUNNING run in ``tracking.experiment`` of :func:`store_uri`, the flattened config as
    params (redacted). The experiment, if this makes it, keeps its artifacts under
    ``tracking.output_dir`` when the store is local (:func:`imascl_ray.tracking.models.experiment_id`)."""
    from imascl_ray.tracking.models import experiment_id

    uri = store_uri(config)
    run_tags = dict(tags or {}) | ({tag.PARENT_RUN: parent_run_id} if parent_run_id else {})
    experiment = experiment_id(uri, config.tracking.experiment, config.tracking.output_dir)
    created = client(uri).create_run(experiment, run_name=run_name, tags=run_tags)
    run = TrackedRun(uri, created.info.run_id, nested=parent_run_id is not None)
    run.log_params(flatten(config))
    return run


def reopen_run(uri: str, run_id: str | None, *, nested: bool = False) -> TrackedRun | None:
    """The earlier run ``run_id`` set back to RUNNING (a resumed run continues it); None if the store
    has no such run."""
    if run_id is None:
        return None
    mlflow = client(uri)
    try:
        mlflow.get_run(run_id)
    except Exception:
        logger.warning("[mlflow] run %s of the resumed run is not in %s: starting another", run_id, uri)
        return None
    mlflow.update_run(run_id, status="RUNNING")
    return TrackedRun(uri, run_id, nested=nested)


def _short(error: BaseException) -> str:
    return redact_text(f"{type(error).__name__}: {error}")[:300]
