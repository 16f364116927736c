"""The function every Ray Train worker runs: rebuild the config, find its rank, run the engine's loop."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from imascl_ray.config import from_dict
from imascl_ray.engine.loop import RankContext, TrainingLoop
from imascl_ray.logs import configure_logging, quiet_ray_train_reports
from imascl_ray.preparation import PreparedRun
from imascl_ray.tracking.metrics import MetricsSink

#: How long rank 0 waits at the end of training for queued metrics to reach an MLflow server that is away.
METRICS_FLUSH_TIMEOUT_S = 120.0
#: How long rank 0 waits, before reporting a checkpoint, for the metrics queued so far (none while the
#: server is known to be away).
METRICS_CHECKPOINT_FLUSH_S = 30.0


class RayReporter:
    """Forwards the loop's reports to ``ray.train.report`` and, on rank 0 only, to the run's MLflow run.

    MLflow gets them through a :class:`~imascl_ray.tracking.metrics.MetricsSink`: sent in the
    background, retried and queued while the server is away, so tracking never stalls or ends training.
    """

    def __init__(self, rank: int, mlflow_uri: str | None, mlflow_run_id: str | None) -> None:
        self.sink = MetricsSink(mlflow_run_id, mlflow_uri) if rank == 0 and mlflow_run_id else None

    def __call__(self, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if self.sink is not None:
            step = int(metrics.get("step", 0))
            self.sink.log({key: value for key, value in metrics.items() if key != "step"}, step)
            if checkpoint is not None:  # every metric up to a checkpoint is stored before it counts
                self.sink.flush(METRICS_CHECKPOINT_FLUSH_S)
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None
        )

    def close(self, timeout_s: float = METRICS_FLUSH_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) for the queued metrics to reach MLflow."""
        if self.sink is not None:
            self.sink.close(timeout_s)


def train_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's ``train_loop_per_worker``; ``payload``: the config, the prepared run, the MLflow ids."""
    configure_logging()
    quiet_ray_train_reports()
    config = from_dict(payload["config"])
    prepared = PreparedRun(**payload["prepared"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(config.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    reporter = RayReporter(rank, payload.get("mlflow_uri"), payload.get("mlflow_run_id"))
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_dir:
        rank_context = RankContext(rank, world_size, device, Path(resume_dir) if resume_dir else None)
        loop = TrainingLoop(config, prepared, rank_context, reporter)
    try:
        summary = loop.run()
    except BaseException:
        reporter.close(timeout_s=10.0)  # a failing worker group: keep what can go out quickly
        raise
    reporter.close()
    summary["nodes"] = _gather_node_ids(world_size)
    return summary


def _gather_node_ids(world_size: int) -> list[str]:
    """The Ray node of every rank, in rank order (what rank 0 returns shows where the workers ran)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    if world_size == 1:
        return [node]
    nodes: list[str] = [""] * world_size
    dist.all_gather_object(nodes, node)
    return nodes
