"""Starting or joining Ray the way each entry point needs it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from imascl_ray.config import Config
from imascl_ray.logs import LOCAL_CLUSTER_WORKER_SETUP

#: Environment that Ray workers should see too (their own processes do not inherit the driver's).
WORKER_ENVIRONMENT = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    "IMASCL_RAY_CACHE",
    "MLFLOW_TRACKING_URI",
)


@contextlib.contextmanager
def ray_session(address: str | None, config: Config | None = None, **init_kwargs) -> Iterator[None]:
    """``ray.init`` for the duration of a command; a no-op if Ray is already initialised.

    ``address=None`` starts a local cluster of this process's own (``address="local"``: a bare
    ``ray.init()`` would join any cluster already running on the machine); inside ``ray job submit``
    pass ``"auto"`` to join the job's cluster, whose environment comes from the job's runtime env
    (``--runtime-env-json``). Without a GPU the local cluster advertises at least one
    CPU per worker plus one for the driver's controller, so a 2-core machine can still run 2 workers.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    kwargs = {"logging_level": logging.WARNING, **init_kwargs}
    if address is None:
        # Our own cluster: hand the workers the driver's settings. A joined cluster (a `ray job submit`
        # job) has its runtime env already, and Ray refuses to merge one that sets the same variables.
        env = {key: os.environ[key] for key in WORKER_ENVIRONMENT if key in os.environ}
        runtime_env = {"env_vars": env, "worker_process_setup_hook": LOCAL_CLUSTER_WORKER_SETUP}
        kwargs.setdefault("runtime_env", runtime_env)
        kwargs["address"] = "local"
        if config is not None and "num_cpus" not in kwargs:
            needed = int(config.scaling.num_workers * config.scaling.cpus_per_worker) + 1
            kwargs["num_cpus"] = max(needed, os.cpu_count() or 1)
        kwargs.setdefault("include_dashboard", False)
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()
