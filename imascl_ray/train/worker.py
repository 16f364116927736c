"""The function every Ray Train worker runs: rebuild the config, find its rank, run the engine's loop."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from imascl_ray.config import from_dict
from imascl_ray.engine.loop import SCORE, RankContext, TrainingLoop
from imascl_ray.engine.timing import NullTimer, Timer
from imascl_ray.logs import configure_logging, quiet_ray_train_reports
from imascl_ray.preparation import PreparedRun
from imascl_ray.tracking.metrics import MetricsSink

#: How long rank 0 waits at the end of training for queued metrics to reach an MLflow server that is away.
METRICS_FLUSH_TIMEOUT_S = 120.0
#: How long rank 0 waits, before reporting a checkpoint, for the metrics queued so far (none while the
#: server is known to be away).
METRICS_CHECKPOINT_FLUSH_S = 30.0


class RayReporter:
    """Forwards the loop's validations to ``ray.train.report`` and, on rank 0 only, every report to the
    run's MLflow run.

    MLflow gets them through a :class:`~imascl_ray.tracking.metrics.MetricsSink`: sent in the
    background, retried and queued while the server is away, so tracking never stalls or ends training.

    Ray hears only the reports that carry a validation (and with it rank 0's checkpoint): in Ray Train
    2.60 every ``ray.train.report`` is a barrier of all ranks through an actor, whatever it carries, and
    nothing of Ray's reads the training metrics in between (Tune forwards only the validations:
    :class:`~imascl_ray.tune.trainable.ValidationReportCallback`; the run's outcome is its last report,
    a validation). Every rank validates at the same steps, so every rank calls it alike.
    """

    def __init__(self, rank: int, mlflow_uri: str | None, mlflow_run_id: str | None) -> None:
        self.sink = MetricsSink(mlflow_run_id, mlflow_uri) if rank == 0 and mlflow_run_id else None
        self.timer: Timer = NullTimer()
        """The loop's step timer (set by :func:`train_worker`): the report's parts, when timing is on."""

    def __call__(self, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if self.sink is not None:
            step = int(metrics.get("step", 0))
            self.sink.log({key: value for key, value in metrics.items() if key != "step"}, step)
            if checkpoint is not None:  # every metric up to a checkpoint is stored before it counts
                with self.timer.phase("report.mlflow_flush"):
                    self.sink.flush(METRICS_CHECKPOINT_FLUSH_S)
        if SCORE not in metrics:
            return
        with self.timer.phase("report.ray"):
            ray.train.report(
                metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint) if checkpoint else None
            )

    def close(self, timeout_s: float = METRICS_FLUSH_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) for the queued metrics to reach MLflow."""
        if self.sink is not None:
            self.sink.close(timeout_s)


def memory_mib() -> dict[str, float]:
    """This process's resident memory in MiB, as Linux's ``/proc/self/status`` splits it.

    ``peak`` (VmHWM, what ``ru_maxrss`` reports) and ``now`` (VmRSS), and the parts of ``now``:
    ``anonymous`` (heap: what a corpus read whole would grow), ``file`` (pages of mapped files: the
    stream folder's and the teacher cache's, reclaimable by the kernel) and ``shared`` (shared memory:
    Ray's object store). Where there is no ``/proc``, only ``peak``, from ``getrusage``.
    """
    fields = {
        "VmHWM": "peak",
        "VmRSS": "now",
        "RssAnon": "anonymous",
        "RssFile": "file",
        "RssShmem": "shared",
    }
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {"peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    memory = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in fields:
            memory[fields[key]] = round(int(value.split()[0]) / 1024, 1)  # "123456 kB"
    return memory


def train_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Ray Train's ``train_loop_per_worker``; ``payload``: the config, the prepared run, the MLflow ids."""
    # A Ray worker process may have run other work before it became this Train worker: its peak so far
    # tells the loop's own memory from what it inherited (benchmarks/corpus_scale.py reports both).
    before = memory_mib()
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
    reporter.timer = loop.timer
    try:
        summary = loop.run()
    except BaseException:
        reporter.close(timeout_s=10.0)  # a failing worker group: keep what can go out quickly
        raise
    reporter.close()
    # Where each rank ran and its peak resident memory (what a corpus's size costs a worker:
    # benchmarks/corpus_scale.py), gathered in one collective.
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    ranks = _gather(
        {
            "node": ray.get_runtime_context().get_node_id(),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "memory_mib": {**memory_mib(), "peak_before": before.get("peak")},
        },
        world_size,
    )
    summary["nodes"] = [rank_figures["node"] for rank_figures in ranks]
    for key in ("peak_rss_mib", "memory_mib"):
        summary[key] = [rank_figures[key] for rank_figures in ranks]
    return summary


def _gather(value: Any, world_size: int) -> list[Any]:
    """Every rank's ``value``, in rank order (what rank 0 returns shows where and how the workers ran)."""
    import torch.distributed as dist

    if world_size == 1:
        return [value]
    values: list[Any] = [None] * world_size
    dist.all_gather_object(values, value)
    return values
