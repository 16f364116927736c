"""Ray clusters for the tests: the session's shared local head, and two nodes on one machine.

Both are started by :class:`ray.cluster_utils.Cluster`, whose ``shutdown`` ends the processes it started
by their ids (never ``ray stop``, which would end every Ray process on the machine). No node has a
dashboard; the nodes take Ray's own address for this machine, as ``ray.init(address="local")`` does
(a head given ``node_ip_address=127.0.0.1`` is not reachable at the GCS address Ray then reports).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import ray
from ray.cluster_utils import Cluster

#: CPUs of the shared head: one Tune trial at a time (its own CPU plus 2 workers x 1 CPU) and a 2-worker
#: Train run with a spare CPU, as the modules that had clusters of their own asked for (3 or 4 CPUs).
SHARED_HEAD_CPUS = 4


@contextmanager
def local_head(num_cpus: int = SHARED_HEAD_CPUS) -> Iterator[Cluster]:
    """A Ray head of this process's own; no driver joins it here (see :func:`joined`)."""
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": num_cpus, "include_dashboard": False},
    )
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@contextmanager
def joined(address: str, env_vars: Mapping[str, str] | None = None) -> Iterator[None]:
    """This process as a driver of the cluster at ``address`` (well under a second), then disconnected.

    ``env_vars`` reach every worker of this driver (a job runtime env): a test that needs a setting in
    the workers passes it here instead of starting a cluster of its own.
    """
    runtime_env = {"env_vars": dict(env_vars)} if env_vars else None
    ray.init(
        address=address,
        runtime_env=runtime_env,
        logging_level=logging.ERROR,
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def two_raylets(cpus_per_node: int) -> Iterator[Cluster]:
    """A head and a second node of ``cpus_per_node`` CPUs each, no dashboard; this process joins it."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=cpus_per_node)
    try:
        with joined(cluster.address):
            yield cluster
    finally:
        cluster.shutdown()
