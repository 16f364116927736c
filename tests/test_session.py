"""``ray_session``: the local cluster a command starts for itself hands its workers the driver's settings."""

from __future__ import annotations

import logging
import os

import pytest
import ray

from imascl_ray.train.session import ray_session

pytestmark = pytest.mark.slow


def test_a_local_cluster_gives_its_workers_the_settings_and_the_quiet_cleaner(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    @ray.remote(num_cpus=1)
    def worker_view() -> tuple[str | None, int]:
        from ray.train.v2._internal.execution.controller import placement_group_cleaner

        level = logging.getLogger(placement_group_cleaner.__name__).getEffectiveLevel()
        return os.environ.get("HF_HUB_OFFLINE"), level

    assert not ray.is_initialized()
    with ray_session(None, num_cpus=1):
        offline, cleaner_level = ray.get(worker_view.remote())
    assert not ray.is_initialized()  # the session ends its cluster
    assert offline == "1"
    # Without a dashboard the cleaner's state-API check fails every second; its warnings are silenced.
    assert cleaner_level == logging.ERROR
