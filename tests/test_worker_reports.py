"""What a Ray Train worker sends where: every report to MLflow (rank 0), only validations to Ray.

In Ray Train 2.60 each ``ray.train.report`` is a barrier of every rank through an actor (about a
quarter of a second a call on this machine, issue 25); nothing of Ray's reads the training metrics
between validations, so they go to MLflow alone.
"""

from __future__ import annotations

import pytest

from imascl_ray.engine.loop import SCORE
from imascl_ray.engine.timing import StepTimer
from imascl_ray.train import worker


class Sink:
    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []
        self.flushes = 0

    def log(self, metrics: dict, step: int) -> None:
        self.logged.append((step, metrics))

    def flush(self, timeout_s: float) -> None:
        self.flushes += 1


@pytest.fixture
def ray_reports(monkeypatch) -> list[tuple[dict, object]]:
    sent: list[tuple[dict, object]] = []
    monkeypatch.setattr(
        worker.ray.train, "report", lambda metrics, checkpoint=None: sent.append((metrics, checkpoint))
    )
    return sent


def test_ray_hears_the_validations_and_mlflow_every_report(ray_reports, tmp_path):
    reporter = worker.RayReporter(rank=1, mlflow_uri=None, mlflow_run_id=None)  # a rank without MLflow
    reporter({"step": 5, "train/loss": 1.0}, None)
    reporter({"step": 10, "train/loss": 0.5, SCORE: 0.7, "val/best": 0.7}, None)
    assert [metrics["step"] for metrics, _ in ray_reports] == [10]

    rank0 = worker.RayReporter(rank=0, mlflow_uri=None, mlflow_run_id=None)
    rank0.sink = sink = Sink()
    rank0.timer = timer = StepTimer(warmup=0)
    timer.start_step()
    rank0({"step": 5, "train/loss": 1.0}, None)
    rank0({"step": 10, "train/loss": 0.5, SCORE: 0.7}, tmp_path)  # a validation with rank 0's checkpoint
    timer.end_step()
    assert [step for step, _ in sink.logged] == [5, 10] and sink.flushes == 1
    assert "step" not in sink.logged[0][1]
    assert [metrics["step"] for metrics, _ in ray_reports] == [10, 10]
    assert ray_reports[-1][1].path == str(tmp_path)  # the checkpoint goes with the validation
    assert {"report.mlflow_flush", "report.ray"} <= set(timer.summary()["phases_count"])
