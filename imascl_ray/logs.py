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


#: Import path of :func:`quiet_local_cluster_worker`, for ``runtime_env["worker_process_setup_hook"]``.
LOCAL_CLUSTER_WORKER_SETUP = "imascl_ray.logs.quiet_local_cluster_worker"


def quiet_local_cluster_worker() -> None:
    """Setup hook of every worker process of a local cluster started without a dashboard.

    Ray Train's ``PlacementGroupCleaner`` actor asks the state API, which the dashboard serves, whether
    the run's controller is alive, once a second; without a dashboard every call fails and logs a
    WARNING ("Failed to query Ray Train Controller actor state"), hundreds of lines in a quickstart.
    The cleaner can do nothing there anyway (the Tune layer frees orphaned placement groups itself:
    :func:`imascl_ray.tune.sweep.remove_orphaned_placement_groups`), so its warnings go. Never raises: a
    failing setup hook would stop the worker from starting.
    """
    try:
        from ray.train.v2._internal.execution.controller import placement_group_cleaner
    except ImportError:
        return
    logging.getLogger(placement_group_cleaner.__name__).setLevel(logging.ERROR)
