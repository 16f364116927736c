"""Shared test settings and the session's one local Ray cluster.

The environment is that of ``.ci/env.sh``, set before anything imports Ray. The in-process Ray tests
share one local head (4 CPUs, 127.0.0.1, no dashboard) started the first time a test asks for
``ray_cluster`` and stopped by its own process ids when the session ends: a cluster costs seconds to
start and stop, a driver joining a running one well under a second. Each module joins it as a driver of
its own and leaves at the module's end, so a test that needs a cluster of its own (two nodes, a head
for ``ray job submit``, a ``imascl-ray`` subprocess, ``ray_session``'s own local cluster) still gets one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imascl_ray.testing import set_test_environment

set_test_environment()


@pytest.fixture(scope="session")
def shared_ray_address() -> Iterator[str]:
    """The GCS address of the session's local Ray head (started on first use)."""
    from ray_nodes import local_head

    with local_head() as cluster:
        yield cluster.address


@pytest.fixture(scope="module")
def ray_cluster(shared_ray_address: str) -> Iterator[str]:
    """This module's tests run as a driver of the shared head; yields its address."""
    from ray_nodes import joined

    with joined(shared_ray_address):
        yield shared_ray_address
