"""Rank 0's metrics to MLflow without training ever waiting on, or dying of, tracking.

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
:func:`call_with_retries` does the same for the driver's few one-off calls (closing the run).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from imascl_ray.tracking_uri import redact_text

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: MLflow's limit on metrics per ``log_batch`` call.
BATCH_LIMIT = 1000


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
        from mlflow.entities import Metric

        from imascl_ray.eval.tracking import metric_key

        timestamp = int(time.time() * 1000)
        entries = [
            Metric(metric_key(key), float(value), timestamp, int(step))
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
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
                    from mlflow.tracking import MlflowClient

                    self.client = MlflowClient(tracking_uri=self.tracking_uri)
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


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    timeout_s: float = 300.0,
    first_backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
) -> T:
    """``call()``, tried again with exponential back-off while it raises, for at most ``timeout_s``;
    the last error is raised after that. ``what`` names the call in the one warning logged."""
    deadline = time.monotonic() + timeout_s
    backoff = first_backoff_s
    warned = False
    while True:
        try:
            return call()
        except Exception as error:
            if time.monotonic() + backoff > deadline:
                raise
            if not warned:
                warned = True
                logger.warning("[mlflow] %s failed (%s); trying again", what, redact_text(str(error))[:300])
            time.sleep(backoff)
            backoff = min(max_backoff_s, backoff * 2)
