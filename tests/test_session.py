"""``ray_session``: the local cluster a command starts for itself hands its workers the driver's settings."""

from __future__ import annotations

import logging
import os

import pytest
import ray

from imascl_ray.logs import RAY_TRAIN_CLEANER_LOGGER
from imascl_ray.train.session import ray_session

pytestmark = pytest.mark.slow


def test_a_local_cluster_gives_its_workers_the_settings_and_the_quiet_cleaner(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    @ray.remote(num_cpus=1)
    def worker_view() -> tuple[str | None, int]:
        import importlib

        # The cleaner's module, imported as Ray Train does in its actor, logs through a quieted logger.
        cleaner = importlib.import_module(RAY_TRAIN_CLEANER_LOGGER)
        return os.environ.get("HF_HUB_OFFLINE"), cleaner.logger.getEffectiveLevel()

    assert not ray.is_initialized()
    with ray_session(None, num_cpus=1):
        offline, cleaner_level = ray.get(worker_view.remote())
    assert not ray.is_initialized()  # the session ends its cluster
    assert offline == "1"
    # Without a dashboard the cleaner's state-API check fails every second; its warnings are silenced.
    assert cleaner_level == logging.ERROR


def test_a_train_worker_drops_ray_trains_per_report_line_but_keeps_the_projects_own():
    """On a Train worker, Ray's "Reporting training result" goes through the root logger (which Ray
    Train sets to INFO) from a logger named after its file; quiet_ray_train_reports stops it there."""
    from imascl_ray.logs import configure_logging, quiet_ray_train_reports

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    root, project = logging.getLogger(), logging.getLogger("imascl_ray")
    previous = root.level
    on_root, on_project = Keep(), Keep()
    root.addHandler(on_root)
    try:
        root.setLevel(logging.INFO)  # as Ray Train's worker logging config leaves it
        configure_logging()
        project.addHandler(on_project)
        quiet_ray_train_reports()
        logging.getLogger("/site-packages/ray/train/v2/context.py").info("Reporting training result 1")
        logging.getLogger("imascl_ray.engine.loop").info("[train] step 1")
    finally:
        root.removeHandler(on_root)
        project.removeHandler(on_project)
        root.setLevel(previous)
    assert on_root.messages == []
    assert on_project.messages == ["[train] step 1"]


def test_the_projects_log_lines_follow_stderr_when_it_is_swapped_and_the_old_one_closed(monkeypatch):
    """pytest, notebooks and redirects replace ``sys.stderr`` and close the old one; a handler holding
    the old stream failed every later line with "I/O operation on closed file" (CI printed one per
    warning after test_benchmarks)."""
    import io
    import sys

    from imascl_ray.logs import configure_logging

    project = logging.getLogger("imascl_ray")
    monkeypatch.setattr(project, "handlers", [])
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    failures = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: failures.append(record))
    logging.getLogger("imascl_ray.engine.loop").warning("[train] still heard")
    assert failures == [] and second.getvalue() == "[train] still heard\n"
