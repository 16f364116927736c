"""One Tune trial: a function trainable that runs one whole training run on its own ``TorchTrainer``.

Ray 2.60 (Train V2) no longer accepts a trainer as a Tuner's trainable; the trial is a function that
calls :func:`imascl_ray.train.trainer.run_training` with a Train callback forwarding the workers'
validation reports to Tune (:class:`ValidationReportCallback`), so the scheduler (ASHA) sees the
validation metric at each ``eval_every`` step and can stop the trial between validations. The trial
uses the sweep's shared teacher cache, logs into its own MLflow child run, and ends with one closing
report: the best value (the exported model's checkpoint), the evaluation, ``final=1``.

A trial that finished before the sweep's driver was killed left ``trial-result.json`` in its run
folder; if Tune restarts it on resume, it reports that result again instead of training again.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from imascl_ray.preparation import SharedTeacherCache
from imascl_ray.tune.files import write_json_atomically
from imascl_ray.tune.space import SCORE, SearchSpace

TRIAL_RESULT = "trial-result.json"
EVENTS_FILE = "events.jsonl"


class ValidationReportCallback(TuneReportCallback):
    """Forward to Tune only the Train reports that carry ``metric`` (the validations).

    The loop reports training metrics every ``log_every`` steps and validation metrics with a
    checkpoint every ``eval_every`` steps. Tune insists that every result carries the searcher's and
    scheduler's metric, and ASHA should compare trials on validations, so only those go through. With
    a ``sweep_dir``, each validation also goes to the sweep's ``events.jsonl`` (progress you can follow
    while Tune's own files wait for their next sync).
    """

    def __init__(
        self, metric: str = SCORE, sweep_dir: str | None = None, trial_id: str | None = None
    ) -> None:
        super().__init__()
        self.metric, self.sweep_dir, self.trial_id = metric, sweep_dir, trial_id

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics or self.metric not in metrics[0]:
            return
        super().after_report(run_context, metrics, checkpoint)
        if self.sweep_dir is not None and self.trial_id is not None:
            values = metrics[0]
            log_event(
                self.sweep_dir,
                self.trial_id,
                "validation",
                step=values.get("step"),
                value=values[self.metric],
            )


@dataclass
class TrialSpec:
    """What every trial of one sweep shares (sent once to the cluster with ``tune.with_parameters``)."""

    space: SearchSpace
    sweep_name: str
    sweep_dir: str
    parent_run_id: str
    shared_teacher: SharedTeacherCache
    tags: dict[str, str]
    """Space file, git commit and sweep name: on the parent and on every child run."""


def trial_run_name(sweep_name: str, trial_id: str) -> str:
    """The trial's training-run name: its folder under ``<output_dir>/runs`` and its MLflow run name."""
    return f"{sweep_name}-{trial_id}"


def trial_run_dir(spec: TrialSpec, trial_id: str) -> Path:
    return (
        Path(spec.space.fixed.tracking.output_dir).resolve()
        / "runs"
        / trial_run_name(spec.sweep_name, trial_id)
    )


def log_event(sweep_dir: str | Path, trial_id: str, event: str, **details: Any) -> None:
    """Append one line to the sweep's ``events.jsonl`` (trial started / reused / finished)."""
    line = json.dumps({"time": time.time(), "trial_id": trial_id, "event": event, **details}, default=str)
    with open(Path(sweep_dir) / EVENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_events(sweep_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_trial(params: dict[str, Any], spec: TrialSpec) -> None:
    """Tune's function trainable: train with ``params`` on top of the sweep's fixed config."""
    import logging

    from ray import tune

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from imascl_ray.tracking.sweeps import start_child_run
    from imascl_ray.train.trainer import TrialContext, run_training

    trial_id = tune.get_context().get_trial_id()
    config = spec.space.trial_config(params)
    run_name = trial_run_name(spec.sweep_name, trial_id)
    done = trial_run_dir(spec, trial_id) / TRIAL_RESULT
    if done.is_file():
        log_event(spec.sweep_dir, trial_id, "reused", run_name=run_name)
        tune.report(json.loads(done.read_text()))
        return
    run = start_child_run(
        config,
        run_name,
        parent_run_id=spec.parent_run_id,
        trial_id=trial_id,
        searched=params,
        tags=spec.tags,
    )
    log_event(spec.sweep_dir, trial_id, "start", run_name=run_name, mlflow_run_id=run.run_id, params=params)
    callback = ValidationReportCallback(spec.space.metric, spec.sweep_dir, trial_id)
    # A trial always resumes: Tune restarts it in its own run folder, and it continues from its checkpoint.
    trial = TrialContext(run, shared_teacher=spec.shared_teacher, callbacks=[callback])
    outcome = run_training(config, run_name=run_name, trial=trial)
    metric = spec.space.metric
    closing = {
        metric: outcome.best_score if metric == SCORE else outcome.metrics.get(metric, math.nan),
        "step": int(outcome.worker_summary.get("global_step", 0)),
        "final": 1,
        **{f"eval/{key}": value for key, value in outcome.eval_metrics.items() if math.isfinite(value)},
    }
    write_json_atomically(done, closing)
    log_event(spec.sweep_dir, trial_id, "finished", best=outcome.best_score)
    tune.report(closing)
