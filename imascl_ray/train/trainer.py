"""The driver side of a training run: prepare, start a ``TorchTrainer``, export the best model, evaluate.

``run_training(config)`` is what ``imascl-ray train`` and each Tune trial call. It prepares the run once
(corpus splits, teacher cache: :mod:`imascl_ray.preparation`), opens the run's MLflow run (a
:class:`~imascl_ray.tracking.TrackedRun`: it ends FINISHED, FAILED or KILLED as the block does), starts
``num_workers`` Ray Train workers running :func:`imascl_ray.train.worker.train_worker` (gloo on CPU,
NCCL on GPU; a failed worker group restarts from the last checkpoint, unless what failed was the run's
input, which no restart cures: :mod:`imascl_ray.train.failures`), exports the best checkpoint by
validation accuracy as a sentence-transformers folder, evaluates it as ``eval.suite`` says, and
publishes it once (model card, MLflow model, registered version: :mod:`imascl_ray.tracking.publish`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imascl_ray.config import Config, to_dict
from imascl_ray.engine.loop import SCORE
from imascl_ray.interrupts import call_interruptibly
from imascl_ray.model_card import corpus_name
from imascl_ray.preparation import PreparedRun, SharedTeacherCache, load_student, prepare_run
from imascl_ray.tracking import TrackedRun, reopen_run, start_run, store_uri, without_credentials
from imascl_ray.train import run_names

logger = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """What a finished run leaves behind."""

    run_dir: Path
    model_dir: Path
    best_score: float
    metrics: dict[str, float]
    """Ray Train's last reported metrics."""
    mlflow_run_id: str | None
    mlflow_uri: str
    worker_summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What rank 0's loop returned: steps, best score, seconds, the node of every rank."""
    evaluation: dict[str, Any] | None = None
    eval_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """The evaluation as flat MLflow metrics (what the run logged; the sweep's table and the registered
    version read them)."""
    structure: dict[str, float] = dataclasses.field(default_factory=dict)
    """Local suite: the monolingual structure kept against the pretrained student, per language."""


@dataclass
class TrialContext:
    """What a run that is part of something larger (a Tune trial, a benchmark's study) hands to
    :func:`run_training` besides its config: such a run logs into the child run it brings, never
    registers its model (the sweep registers its best), and resumes from its checkpoints if it has
    any (Tune restarts a trial in its own run folder)."""

    run: TrackedRun
    """The MLflow child run (made, or reopened on a resumed sweep, by the trial)."""
    shared_teacher: SharedTeacherCache | None = None
    """The sweep's one teacher cache over every trial's sentences."""
    callbacks: list[Any] = dataclasses.field(default_factory=list)
    """Ray Train callbacks (the validation reports forwarded to Tune)."""


def default_run_name(config: Config) -> str:
    """``<loss>-<pair set>-<time>-<random suffix>``, e.g. ``priority-tms-en-xx-20261201-101500-3f9a``."""
    loss = config.loss
    name = loss.labels if loss.name == "soft" else loss.name
    label = f"{name}{'-tms' if loss.tms and loss.name != 'mse' else ''}"
    return f"{label}-{config.data.pair_set}-{time.strftime('%Y%m%d-%H%M%S')}-{run_names.unique_suffix()}"


def export_best_model(
    prepared: PreparedRun, config: Config, checkpoint, out: Path, *, with_card: bool = False
) -> Path:
    """Load a Ray checkpoint's weights (local or remote storage) into the student and save it as a
    sentence-transformers folder. A run's card is written once, by :func:`publish` after the
    evaluation; ``with_card`` writes one from the config alone (a sweep's stopped best trial)."""
    from safetensors.torch import load_model

    from imascl_ray.engine.checkpoint import MODEL_FILE

    student = load_student(config.model, prepared.student)
    with checkpoint.as_directory() as folder:
        load_model(student, str(Path(folder) / MODEL_FILE))
    exported = student.save(out)
    if with_card:
        from imascl_ray.model_card import write_model_card

        write_model_card(exported, config, base_model_folder=prepared.student)
    return exported


def build_trainer(
    config: Config, payload: dict[str, Any], run_name: str, storage: str, callbacks: list[Any] | None = None
):
    """The ``TorchTrainer`` for ``config``: workers, resources, checkpoint policy and failure policy."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from imascl_ray.train.failures import StopOnInputError, train_worker

    scaling = config.scaling
    return TorchTrainer(
        train_worker,
        train_loop_config=payload,
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker} | ({"GPU": 1} if scaling.use_gpu else {}),
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.schedule.keep_checkpoints,
                checkpoint_score_attribute=SCORE,
                checkpoint_score_order="max",
            ),
            # Restarts are for faults a restart can cure: an InputError in a worker ends the run at once.
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            # Ray Train's own INFO lines (one per report and checkpoint) would drown the loop's progress
            # lines, which go through imascl_ray's logger; its warnings and errors still show.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[*(callbacks or []), StopOnInputError()],
        ),
    )


def run_training(
    config: Config,
    *,
    run_name: str | None = None,
    resume: bool = False,
    evaluate: bool = True,
    trial: TrialContext | None = None,
) -> TrainingOutcome:
    """Prepare, train on Ray (the caller has called ``ray.init``), export the best model, evaluate,
    publish.

    A run name that already has checkpoints is an error unless ``resume``
    (:mod:`imascl_ray.train.run_names`); resumed, the run continues from its last checkpoint and logs
    into its earlier MLflow run. A Tune ``trial`` brings its own MLflow child run, the sweep's teacher
    cache and its callbacks, and always resumes (Tune restarts a trial in its own run folder). The MLflow
    run ends FAILED if this raises, KILLED on Ctrl-C or SIGTERM (:mod:`imascl_ray.interrupts`).
    """
    config = without_credentials(config)  # it goes into params and Ray's train_loop_config
    run_name = run_name or config.tracking.run_name or default_run_name(config)
    output = Path(config.tracking.output_dir).resolve()
    run_dir = output / "runs" / run_name
    storage = config.tracking.storage_path or str(output / "ray")
    resume = resume or trial is not None
    if not resume:
        run_names.check_new_run(run_name, storage, run_dir)
    elif run_names.ray_snapshot(storage, run_name) is None:
        logger.info("[train] run %s has no checkpoint yet: it starts from step 0", run_name)
    prepared = prepare_run(config, run_dir, shared_teacher=trial.shared_teacher if trial else None)
    run = _open_run(config, run_name, run_dir, resume, trial)
    logger.info("[train] MLflow run %s in %s", run.run_id, run.uri)
    with run:
        corpus = f"{corpus_name(config.data.corpus)} {config.data.pair_set} (train)"
        run.log_training_corpus(prepared.train, corpus[:500])
        outcome = _train_and_export(config, prepared, run_dir, storage, run, trial)
        if evaluate and config.eval.suite != "none":
            evaluation = evaluate_exported(config, prepared, outcome.model_dir, run)
            outcome.evaluation, outcome.structure = evaluation.results, evaluation.structure
            outcome.eval_metrics = dict(evaluation.metrics)
        publish(config, prepared, outcome, run, register=trial is None)
    return outcome


def _open_run(
    config: Config, run_name: str, run_dir: Path, resume: bool, trial: TrialContext | None
) -> TrackedRun:
    """The trial's child run; or, resumed, the run's earlier MLflow run; else a new one. Its id goes into
    the run folder (what a later ``--resume`` logs into)."""
    earlier = run_names.remembered_mlflow_run(run_dir) if resume and trial is None else None
    run = (
        (trial.run if trial else None)
        or reopen_run(store_uri(config), earlier)
        or start_run(config, run_name)
    )
    run_names.remember_mlflow_run(run_dir, run.run_id)
    return run


def _train_and_export(
    config: Config,
    prepared: PreparedRun,
    run_dir: Path,
    storage: str,
    run: TrackedRun,
    trial: TrialContext | None,
) -> TrainingOutcome:
    """Ray Train's ``fit()`` (it raises if the run fails; run so that a signal reaches this process's
    handler, not Ray Train's), then the export of its best checkpoint."""
    payload = {
        "config": to_dict(config),
        "prepared": dataclasses.asdict(prepared),
        "mlflow_uri": run.uri,
        "mlflow_run_id": run.run_id,
    }
    trainer = build_trainer(config, payload, run_dir.name, storage, trial.callbacks if trial else None)
    try:
        result = call_interruptibly(trainer.fit)
    except Exception as failure:
        from imascl_ray.train.failures import input_error_of

        cause = input_error_of(failure)
        if cause is None:
            raise
        raise cause from None  # a worker's bad input: one line, not Ray's wrapping of it
    if result.error:  # older Ray returned the error instead of raising it
        raise result.error
    best = _best_checkpoint(result)
    model_dir = export_best_model(prepared, config, best[0], run_dir / "model")
    logger.info("[train] best %s %.4f: exported %s", SCORE, best[1], model_dir)
    return TrainingOutcome(
        run_dir,
        model_dir,
        best[1],
        dict(result.metrics or {}),
        run.run_id,
        run.uri,
        dict(result.return_value or {}),
    )


def _best_checkpoint(result) -> tuple[Any, float]:
    """The reported checkpoint with the highest validation score (Ray keeps it among ``num_to_keep``)."""
    scored = [
        (checkpoint, metrics.get(SCORE, float("-inf"))) for checkpoint, metrics in result.best_checkpoints
    ]
    if not scored:
        raise RuntimeError("the run reported no checkpoint; was schedule.eval_every larger than the run?")
    checkpoint, score = max(scored, key=lambda item: item[1])
    return checkpoint, float(score)


def evaluate_exported(config: Config, prepared: PreparedRun, model_dir: Path, run: TrackedRun | None):
    """The config's evaluation suite on the exported model, logged into the training run; returns its
    :class:`~imascl_ray.eval.runner.EvalOutcome`. The local suite also measures the monolingual
    structure the model kept against the pretrained student (``local/structure/<lang>``)."""
    from imascl_ray.eval.runner import EvalOutcome, evaluate_model

    pair_files = list(config.eval.pairs) or ([prepared.test] if prepared.test else [])
    if config.eval.suite == "local" and not pair_files:
        logger.warning("[eval] no test pairs (data.test_pairs = 0, eval.pairs empty): skipping evaluation")
        return EvalOutcome("local", {})
    reference = prepared.student if config.eval.suite == "local" else None
    outcome = evaluate_model(str(model_dir), config.eval.suite, pair_files=pair_files, reference=reference)
    if run is not None:
        run.log_metrics(outcome.metrics)
    return outcome


def publish(
    config: Config, prepared: PreparedRun, outcome: TrainingOutcome, run: TrackedRun, *, register: bool
) -> None:
    """The exported model's card (written once, with the evaluation), its MLflow model and, when
    ``tracking.register_as`` says so and ``register`` (a sweep's nested trial runs leave that to the
    sweep), a registered version: :func:`imascl_ray.tracking.publish.publish_run_model`."""
    from imascl_ray.tracking.publish import publish_run_model

    publish_run_model(
        config,
        outcome.model_dir,
        run,
        run_name=outcome.run_dir.name,
        evaluation=outcome.evaluation,
        eval_metrics=outcome.eval_metrics,
        summary=outcome.worker_summary,
        best_score=outcome.best_score,
        base_model_folder=prepared.student,
        register=register,
    )
