"""Logging for the command line and Ray workers: the project's messages at INFO, everyone else's quiet."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(message)s"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted.

    A plain ``StreamHandler(sys.stderr)`` keeps the stream it was given; where ``sys.stderr`` is swapped
    (pytest's capture, a notebook, a redirect) and the old one closed, every later line fails with
    "I/O operation on closed file". Like the standard library's own last-resort handler, this one looks
    the stream up each time.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: ``stream`` is the property below

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def configure_logging(level: int = logging.INFO) -> None:
    """Show ``imascl_ray``'s log lines (stages, steps, ETA) on stderr; leave the root logger alone.

    Configuring only the package's logger keeps the INFO chatter of Ray, transformers and MLflow (which
    log through the root logger) out of the way. Idempotent.
    """
    logger = logging.getLogger("imascl_ray")
    logger.setLevel(level)
    if not any(getattr(handler, "_imascl_ray", False) for handler in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._imascl_ray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


def quiet_ray_train_reports() -> None:
    """Silence Ray Train's per-report INFO line on this worker ("Reporting training result ...").

    Ray 2.60 logs every ``ray.train.report`` call at INFO through a logger named after its source file,
    outside the ``ray.train`` hierarchy that ``RunConfig(logging_config=...)`` filters; on a Train worker
    such records go to the root logger, which Ray Train sets to INFO. Raising the worker's root logger to
    WARNING drops them (and every other library's INFO chatter on the worker) with nothing but the
    standard ``logging`` API; the project's own lines go through the ``imascl_ray`` logger
    (:func:`configure_logging`), which keeps INFO and does not propagate to the root.
    """
    logging.getLogger().setLevel(logging.WARNING)


#: The name of the logger of Ray Train 2.60's ``PlacementGroupCleaner`` (a logger name, not an import;
#: Ray is pinned to 2.60.x and ``tests/test_tune_ray_pins.py`` checks that this logger still exists).
RAY_TRAIN_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_local_cluster_worker() -> None:
    """Setup hook of every worker process of a local cluster started without a dashboard.

    Ray Train's ``PlacementGroupCleaner`` actor asks the state API, which the dashboard serves, whether
    the run's controller is alive, once a second; without a dashboard every call fails and logs a
    WARNING ("Failed to query Ray Train Controller actor state"), hundreds of lines in a quickstart.
    The cleaner can do nothing there anyway (the Tune layer frees orphaned placement groups itself:
    :mod:`imascl_ray.tune.placement_groups`), so its warnings go (errors still show). Never raises: a
    failing setup hook would stop the worker from starting.
    """
    logging.getLogger(RAY_TRAIN_CLEANER_LOGGER).setLevel(logging.ERROR)
