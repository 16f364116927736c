"""Two Ray nodes on one machine (two raylets), for tests of what must hold across nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray.cluster_utils import Cluster


@contextmanager
def two_raylets(cpus_per_node: int) -> Iterator[Cluster]:
    """A head and a second node of ``cpus_per_node`` CPUs each, no dashboard; this process joins it."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=cpus_per_node)
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
