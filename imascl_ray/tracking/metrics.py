"""Metrics to MLflow: rank 0's stream that training never waits on, and the one-off evaluation metrics.

:func:`log_metrics` puts a flat ``{"tatoeba/fra-eng/acc": 0.95, ...}`` dict into one run (the evaluation
of a trained model, ``imascl-ray eval --mlflow-run-id``). Rank 0's metrics during training go through
:class:`MetricsSink` instead, for the reasons below.

MLflow's client retries HTTP requests itself (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by default, with
exponential back-off: about 4 minutes, on refused connections and 429/5xx answers), and those settings
are forwarded to every worker (:mod:`imascl_ray.tracking_uri`). They are not enough on their own:

- they block the caller: on rank 0 a restarting server would stall every rank at its next collective;
- past their budget (a server away for longer) the call raises, and an exception in rank 0's loop ends
  the whole worker group;
- a sqlite store (``database is locked``) is no HTTP request and gets no retry at all.

So :class:`MetricsSink` queues each report and a background thread sends the queue in batches. A batch
that fails stays queued and is tried again with exponential back-off (MLflow's own retries still apply
inside each try); one warning says the server is away, one line says when it is back. At the end of
training :meth:`MetricsSink.close` waits a bounded time for the queue to drain and, if the server is
still away, drops the rest with one warning. The queue is bounded too (the oldest values go first).
:func:`imascl_ray.tracking.client.call_with_retries` does the same for the driver's few one-off calls.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from imascl_ray.errors import InputError
from imascl_ray.tracking.client import client as make_client
from imascl_ray.tracking.credentials import redact_text

logger = logging.getLogger(__name__)

_REFUSED = re.compile(r"[^0-9A-Za-z_\-. /]")

#: MLflow's limit on metrics per ``log_batch`` call.
BATCH_LIMIT = 1000


def metric_key(key: str) -> str:
    """``key`` with characters MLflow refuses in metric names replaced by ``_``."""
    return _REFUSED.sub("_", key)


def metric_entries(metrics: Mapping[str, float], step: int) -> list:
    """MLflow ``Metric`` entries of ``metrics`` at ``step``, timestamped now; non-finite values skipped
    (MLflow stores NaN, but its UI can neither sort nor plot it)."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    return [
        Metric(metric_key(key), float(value), timestamp, int(step))
        for key, value in metrics.items()
        if value is not None and math.isfinite(float(value))
    ]


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

    A run made here (``experiment``) is closed FINISHED. ``tracking_uri`` defaults to MLflow's own
    default (``MLFLOW_TRACKING_URI``). An unknown ``run_id`` is an :class:`InputError`.
    """
    from mlflow.entities import RunTag

    from imascl_ray.tracking.models import experiment_id as find_experiment

    if run_id is None and experiment is None:
        raise InputError("MLflow logging needs a run id or an experiment name")
    mlflow = make_client(tracking_uri)
    created = run_id is None
    if run_id is None:
        # A new experiment in a local sqlite store keeps its artifacts next to the database, not in
        # ./mlruns of the current folder.
        run_id = mlflow.create_run(find_experiment(mlflow.tracking_uri, str(experiment)), run_name=run_name)
        run_id = run_id.info.run_id
    else:
        try:
            mlflow.get_run(run_id)
        except Exception as error:
            raise InputError(f"MLflow run {run_id} not found at {mlflow.tracking_uri} ({error})") from error
    entries = metric_entries(metrics, step)
    for start in range(0, len(entries), BATCH_LIMIT):
        mlflow.log_batch(run_id, metrics=entries[start : start + BATCH_LIMIT])
    if tags:
        mlflow.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    if created:
        mlflow.set_terminated(run_id)
    return run_id


class MetricsSink:
    """Metrics of one MLflow run, sent in the background; see the module docstring.

    ``client`` is anything with MLflow's ``log_batch(run_id, metrics=[...])`` (default: an
    ``MlflowClient`` for ``tracking_uri``, made by the sending thread on its first try, so that a store
    that cannot be opened yet fails a try, not the worker). ``first_backoff_s`` doubles after each failed
    try up to ``max_backoff_s``.
    """

    def __init__(
        self,
        run_id: str,
        tracking_uri: str | None,
        *,
        client: Any = None,
        max_buffered: int = 200_000,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.run_id, self.client, self.tracking_uri = run_id, client, tracking_uri
        self.where = redact_text(str(tracking_uri or "MLflow's default store"))
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.sent = 0
        """Metric values the server took."""
        self.dropped = 0
        """Metric values given up on (queue full, or still queued when :meth:`close` gave up)."""
        self.failures = 0
        """Tries that failed, over the sink's life."""
        self._pending: deque = deque(maxlen=max_buffered)
        self._in_flight = 0
        self._condition = threading.Condition()
        self._closing = False
        self._given_up = False
        self._away_since: float | None = None
        self._last_error: str | None = None
        self._warned_full = False
        self._thread = threading.Thread(target=self._send_forever, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue ``metrics`` at ``step`` (timestamped now); returns at once. Non-finite values are skipped."""
        entries = metric_entries(metrics, int(step))
        with self._condition:
            if self._closing:
                raise RuntimeError("the metrics sink is closed")
            overflow = len(self._pending) + len(entries) - (self._pending.maxlen or 0)
            if overflow > 0:
                self.dropped += overflow
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "[mlflow] %s has been away too long: dropping the oldest queued metrics", self.where
                    )
            self._pending.extend(entries)
            self._condition.notify_all()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait at most ``timeout_s`` until every queued value has been sent; True if they all were.

        Called before each checkpoint is reported, so that the store holds every metric up to the last
        checkpoint: an interrupted or failed run that resumes from it then leaves no gap in its curves
        (the resumed run logs from the checkpoint's step on). While the server is known to be away it
        returns at once: training never waits on a store that is down.
        """
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if self._away_since is not None or self._closing or left <= 0:
                    return False
                self._condition.wait(min(left, 0.05))
            return True

    def close(self, timeout_s: float = 120.0) -> None:
        """Send what is queued, waiting at most ``timeout_s``; drop what is left with one warning."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout_s)
        with self._condition:
            self._given_up = True
            left = len(self._pending) + self._in_flight
            self._pending.clear()
        if left:
            self.dropped += left
            logger.warning(
                "[mlflow] dropped %d metric value(s) that %s did not take within %.0f s (%s)",
                left,
                self.where,
                timeout_s,
                self._last_error,
            )

    # ------------------------------------------------------------------------------------------------

    def _send_forever(self) -> None:
        backoff = self.first_backoff_s
        while True:
            with self._condition:
                while not self._pending and not self._closing:
                    self._condition.wait()
                if not self._pending:
                    return  # closing, and everything went out
                batch = [self._pending.popleft() for _ in range(min(BATCH_LIMIT, len(self._pending)))]
                self._in_flight = len(batch)
            try:
                if self.client is None:
                    self.client = make_client(self.tracking_uri)
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as error:  # any failure of tracking must stay here, never reach training
                with self._condition:
                    self._in_flight = 0
                    if self._given_up:  # close() has counted this batch as dropped
                        return
                    self._put_back(batch)
                    self._note_failure(error)
                    self._condition.wait(backoff)  # close() wakes it up for one more try at once
                backoff = min(self.max_backoff_s, backoff * 2)
                continue
            with self._condition:
                self._in_flight = 0
                self.sent += len(batch)
                self._condition.notify_all()  # a flush() may be waiting
                if self._away_since is not None:
                    logger.warning(
                        "[mlflow] %s is back after %.0f s: sending the queued metrics",
                        self.where,
                        time.monotonic() - self._away_since,
                    )
                    self._away_since = None
            backoff = self.first_backoff_s

    def _put_back(self, batch: list) -> None:
        """Return a failed ``batch`` to the front of the queue, keeping the newest values if it is full.

        Values logged while the batch was in flight may have filled the queue; a bounded deque's
        ``extendleft`` would then push the newest values out of the other end, so the batch's oldest
        values are the ones dropped here.
        """
        room = self._pending.maxlen - len(self._pending)
        kept = batch[max(0, len(batch) - room) :]
        self.dropped += len(batch) - len(kept)
        self._pending.extendleft(reversed(kept))

    def _note_failure(self, error: Exception) -> None:
        self.failures += 1
        self._last_error = redact_text(f"{type(error).__name__}: {error}")[:300]
        if self._away_since is None:
            self._away_since = time.monotonic()
            logger.warning(
                "[mlflow] could not log metrics to %s (%s); training goes on, metrics are queued and retried",
                self.where,
                self._last_error,
            )
