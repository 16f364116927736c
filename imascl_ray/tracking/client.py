"""The one place an ``MlflowClient`` is made, and retries for the driver's one-off calls.

Every module of :mod:`imascl_ray.tracking` asks :func:`client` for its client, so the store and the
registry always agree (``registry_uri`` = the tracking URI: a local sqlite store holds both) and MLflow is
imported only where tracking happens (workers that never log pay nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from imascl_ray.tracking.credentials import redact_text

logger = logging.getLogger(__name__)

T = TypeVar("T")


def client(uri: str | None) -> Any:
    """An ``MlflowClient`` for the store ``uri`` (and its registry); MLflow's default store for None."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
