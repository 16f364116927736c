"""Starting or joining Ray the way each entry point needs it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from imascl_ray.config import Config
from imascl_ray.interrupts import raise_on_signals
from imascl_ray.logs import quiet_local_cluster_worker
from imascl_ray.tracking.credentials import adopt_credentials, worker_environment

#: Environment that Ray workers should see too (their own processes do not inherit the driver's).
WORKER_ENVIRONMENT = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    "IMASCL_RAY_CACHE",
    "MLFLOW_TRACKING_URI",
)

#: Set while joining a cluster inside a ``ray job submit`` job, so that the MLflow variables this driver
#: adds to the job's runtime env may repeat ones the job set already (same values: they came from it).
_OVERRIDE_JOB_ENV = "RAY_OVERRIDE_JOB_RUNTIME_ENV"


#: The setup hook of every worker process of a cluster that :func:`ray_session` starts itself.
LOCAL_CLUSTER_WORKER_SETUP = "imascl_ray.train.session.local_cluster_worker_setup"


def local_cluster_worker_setup() -> None:
    """Setup hook of every worker process of our own local cluster: Ray Train's warnings that cannot
    matter there go (:func:`imascl_ray.logs.quiet_local_cluster_worker`), and the process knows which
    cluster it belongs to.

    Ray Train's ``PlacementGroupCleaner`` actor asks the state API about the run's controller without
    an address; Ray then looks for the clusters running on the machine, and when there is another one
    (a colleague's, a ``ray start --head``) it raises "Found multiple active Ray instances", which kills
    the cleaner's thread with a 30-line traceback in the run's output. ``RAY_ADDRESS`` set to this
    cluster's own GCS makes every such look-up find this cluster. Never raises: a failing setup hook
    would stop the worker from starting."""
    quiet_local_cluster_worker()
    try:
        import ray

        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    except Exception:  # the hook must not stop a worker
        pass


@contextlib.contextmanager
def ray_session(address: str | None, config: Config | None = None, **init_kwargs) -> Iterator[None]:
    """``ray.init`` for the duration of a command; a no-op if Ray is already initialised.

    ``address=None`` starts a local cluster of this process's own (``address="local"``: a bare
    ``ray.init()`` would join any cluster already running on the machine); inside ``ray job submit``
    pass ``"auto"`` to join the job's cluster, whose environment comes from the job's runtime env
    (``--runtime-env-json``). Either way the workers get MLflow's credential and retry variables
    (:func:`imascl_ray.tracking.credentials.worker_environment`), after credentials written into
    ``tracking.mlflow_uri`` have moved into them. Without a GPU the local cluster advertises at least one
    CPU per worker plus one for the driver's controller, so a 2-core machine can still run 2 workers.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    if config is not None:
        adopt_credentials(config.tracking.mlflow_uri)
    kwargs = {"logging_level": logging.WARNING, **init_kwargs}
    forwarding_to_a_job = False
    if address is None:
        # Our own cluster: hand the workers the driver's settings. A joined cluster (a `ray job submit`
        # job) has its runtime env already, and Ray refuses to merge one that sets the same variables.
        env = {key: os.environ[key] for key in WORKER_ENVIRONMENT if key in os.environ}
        env |= worker_environment()
        runtime_env = {"env_vars": env, "worker_process_setup_hook": LOCAL_CLUSTER_WORKER_SETUP}
        kwargs.setdefault("runtime_env", runtime_env)
        kwargs["address"] = "local"
        if config is not None and "num_cpus" not in kwargs:
            needed = int(config.scaling.num_workers * config.scaling.cpus_per_worker) + 1
            kwargs["num_cpus"] = max(needed, os.cpu_count() or 1)
        kwargs.setdefault("include_dashboard", False)
    else:
        kwargs["address"] = address
        # Only MLflow's credentials: a worker on another node has nothing else to get them from. Inside a
        # job they are the job's own values (so overriding changes nothing); a driver started by hand
        # on the head (`--address auto`) has no job runtime env to merge with.
        mlflow_env = worker_environment()
        if mlflow_env and "runtime_env" not in kwargs:
            kwargs["runtime_env"] = {"env_vars": mlflow_env}
            forwarding_to_a_job = True
    with _job_env_override(forwarding_to_a_job):
        ray.init(**kwargs)
    raise_on_signals()  # ray.init replaced the SIGTERM handler with one that exits 1 at once
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _job_env_override(enabled: bool) -> Iterator[None]:
    """Let ``ray.init``'s runtime env repeat variables of the job's (Ray refuses that by default)."""
    if not enabled or _OVERRIDE_JOB_ENV in os.environ:
        yield
        return
    os.environ[_OVERRIDE_JOB_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(_OVERRIDE_JOB_ENV, None)
