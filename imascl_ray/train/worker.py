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
from imascl_ray.eval.tracking import log_metrics
from imascl_ray.logs import configure_logging, quiet_ray_train_reports
from imascl_ray.preparation import PreparedRun


class RayReporter:
    """Forwards the loop's reports to ``ray.train.report`` and, on rank 0 only, to the run's MLflow run."""

    def __init__(self, rank: int, mlflow_uri: str | None, mlflow_run_id: str | None) -> None:
        self.mlflow_uri = mlflow_uri
        self.mlflow_run_id = mlflow_run_id if rank == 0 else None

    def __call__(self, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if self.mlflow_run_id is not None:
            step = int(metrics.get("step", 0))
            values = {key: value for key, value in metrics.items() if key != "step"}
            log_metrics(values, run_id=self.mlflow_run_id, tracking_uri=self.mlflow_uri, step=step)
        ray.train.report(
            metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None
        )


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
    summary = loop.run()
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
