"""Logging for the command line and Ray workers: the project's messages at INFO, everyone else's quiet."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Show ``imascl_ray``'s log lines (stages, steps, ETA) on stderr; leave the root logger alone.

    Configuring only the package's logger keeps the INFO chatter of Ray, transformers and MLflow (which
    log through the root logger) out of the way. Idempotent.
    """
    logger = logging.getLogger("imascl_ray")
    logger.setLevel(level)
    if not any(getattr(handler, "_imascl_ray", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._imascl_ray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


def quiet_ray_train_reports() -> None:
    """Silence Ray Train's per-report INFO line on this worker ("Reporting training result ...").

    Ray 2.60 logs every ``ray.train.report`` call at INFO through a logger named after its source file,
    which ``RunConfig(logging_config=...)`` does not reach; on a 2-worker run it doubles the output. A
    no-op if Ray moves that module.
    """
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
