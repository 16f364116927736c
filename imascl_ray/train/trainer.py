"""The driver side of a training run: prepare, start a ``TorchTrainer``, export the best model, evaluate.

``run_training(config)`` is what ``imascl-ray train`` and each Tune trial call. It prepares the run once
(corpus splits, teacher cache: :mod:`imascl_ray.preparation`), opens an MLflow run with the flattened config
as params, starts ``num_workers`` Ray Train workers running :func:`imascl_ray.train.worker.train_worker`
(gloo on CPU, NCCL on GPU; a failed worker group restarts from the last checkpoint), exports the best
checkpoint by validation accuracy as a sentence-transformers folder, and evaluates it as ``eval.suite``
says, logging those metrics into the same MLflow run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imascl_ray.config import Config, flatten, to_dict
from imascl_ray.engine.loop import SCORE
from imascl_ray.preparation import PreparedRun, SharedTeacherCache, load_student, prepare_run
from imascl_ray.tracking_uri import adopt_credentials, redact_text, without_credentials
from imascl_ray.train import run_names
from imascl_ray.train.metrics_sink import call_with_retries

logger = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    """What a finished run leaves behind."""

    run_dir: Path
    model_dir: Path
    best_score: float
    metrics: dict[str, float]
    mlflow_run_id: str | None
    mlflow_uri: str
    worker_summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What rank 0's loop returned: steps, best score, seconds, the node of every rank."""
    evaluation: dict[str, Any] | None = None
    structure: dict[str, float] = dataclasses.field(default_factory=dict)
    """Local suite: the monolingual structure kept against the pretrained student, per language."""


def mlflow_uri(config: Config) -> str:
    """The tracking URI: the configured one, else a sqlite store under the output folder (absolute, as
    Ray workers run in other directories). Credentials written into the URI move to MLflow's environment
    variables (:func:`imascl_ray.tracking_uri.adopt_credentials`): the URI returned has none."""
    if config.tracking.mlflow_uri:
        return adopt_credentials(config.tracking.mlflow_uri)
    folder = Path(config.tracking.output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def default_run_name(config: Config) -> str:
    """``<loss>-<pair set>-<time>-<random suffix>``, e.g. ``priority-tms-en-xx-20261201-101500-3f9a``."""
    loss = config.loss
    name = loss.labels if loss.name == "soft" else loss.name
    label = f"{name}{'-tms' if loss.tms and loss.name != 'mse' else ''}"
    return f"{label}-{config.data.pair_set}-{time.strftime('%Y%m%d-%H%M%S')}-{run_names.unique_suffix()}"


def start_mlflow_run(
    config: Config, run_name: str, *, tags: dict[str, str] | None = None, parent_run_id: str | None = None
) -> str:
    """Create the run's MLflow run with the flattened config as params; returns its id.

    The experiment, if this makes it, keeps its artifacts under ``tracking.output_dir`` (a local store;
    see :func:`imascl_ray.mlflow_model.experiment_id`)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from imascl_ray.mlflow_model import experiment_id as find_experiment

    uri = mlflow_uri(config)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = find_experiment(uri, config.tracking.experiment, config.tracking.output_dir)
    run_tags = dict(tags or {})
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    params = [Param(key, redact_text(str(value))[:6000]) for key, value in flatten(config).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    return run.info.run_id


def export_best_model(prepared: PreparedRun, config: Config, checkpoint, out: Path) -> Path:
    """Load a Ray checkpoint's weights (local or remote storage) into the student; save it as a
    sentence-transformers folder with a model card (the config's facts; the run's evaluation is added
    when it has one, :func:`publish_exported`)."""
    from safetensors.torch import load_model

    from imascl_ray.engine.checkpoint import MODEL_FILE
    from imascl_ray.model_card import write_model_card

    student = load_student(config.model, prepared.student)
    with checkpoint.as_directory() as folder:
        load_model(student, str(Path(folder) / MODEL_FILE))
    exported = student.save(out)
    write_model_card(exported, config, base_model_folder=prepared.student)
    return exported


def build_trainer(
    config: Config, payload: dict[str, Any], run_name: str, storage: str, callbacks: list[Any] | None = None
):
    """The ``TorchTrainer`` for ``config``: workers, resources, checkpoint policy and failure policy."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from imascl_ray.train.worker import train_worker

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
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            # Ray Train's own INFO lines (one per report and checkpoint) would drown the loop's progress
            # lines, which go through imascl_ray's logger; its warnings and errors still show.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
    )


def run_training(
    config: Config,
    *,
    run_name: str | None = None,
    evaluate: bool = True,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Any] | None = None,
    shared_teacher: SharedTeacherCache | None = None,
    mlflow_run_id: str | None = None,
    resume: bool = False,
) -> TrainingOutcome:
    """Prepare, train on Ray (the caller has called ``ray.init``), export the best model, evaluate.

    A Tune trial passes the sweep's ``shared_teacher`` cache, and ``mlflow_run_id`` to log into the
    child run it made (or, resumed, made before) instead of a new one (``tags`` and ``parent_run_id``
    only apply to a run created here). A run name that already has checkpoints is an error unless
    ``resume`` (:mod:`imascl_ray.train.run_names`); resumed, the run continues from its last checkpoint
    and logs into its earlier MLflow run. A run that raises ends FAILED in MLflow (KILLED on Ctrl-C).
    """
    config = without_credentials(config)  # it goes into params and Ray's train_loop_config
    uri = mlflow_uri(config)
    run_name = run_name or config.tracking.run_name or default_run_name(config)
    output = Path(config.tracking.output_dir).resolve()
    run_dir = output / "runs" / run_name
    storage = config.tracking.storage_path or str(output / "ray")
    if not resume:
        run_names.check_new_run(run_name, storage, run_dir)
    elif run_names.ray_snapshot(storage, run_name) is None:
        logger.info("[train] run %s has no checkpoint yet: it starts from step 0", run_name)
    prepared = prepare_run(config, run_dir, shared_teacher=shared_teacher)
    run_id = (
        mlflow_run_id
        or (_reopen_mlflow_run(uri, run_names.remembered_mlflow_run(run_dir)) if resume else None)
        or start_mlflow_run(config, run_name, tags=tags, parent_run_id=parent_run_id)
    )
    run_names.remember_mlflow_run(run_dir, run_id)
    logger.info("[train] MLflow run %s in %s", run_id, uri)
    try:
        log_training_corpus(config, prepared, uri, run_id)
        outcome = _train_and_export(config, prepared, run_name, storage, run_dir, uri, run_id, callbacks)
        if evaluate and config.eval.suite != "none":
            evaluation = evaluate_exported(config, prepared, outcome.model_dir, run_id, uri)
            outcome.evaluation, outcome.structure = evaluation.results, evaluation.structure
        publish_exported(config, prepared, outcome, register=parent_run_id is None)
    except Exception:
        _close_quietly(uri, run_id, "FAILED")
        raise
    except KeyboardInterrupt:
        _close_quietly(uri, run_id, "KILLED")
        raise
    # (A SystemExit is Tune stopping a trial: the sweep closes its run, tagged as stopped early.)
    try:
        call_with_retries(
            lambda: _finish_mlflow(uri, run_id, "FINISHED"),
            what=f"closing MLflow run {run_id}",
        )
    except Exception as error:  # the model is exported: tracking must not fail the run now
        logger.warning(
            "[train] MLflow run %s could not be closed (%s)", run_id, redact_text(str(error))[:300]
        )
    return outcome


def _train_and_export(
    config: Config,
    prepared: PreparedRun,
    run_name: str,
    storage: str,
    run_dir: Path,
    uri: str,
    run_id: str,
    callbacks: list[Any] | None,
) -> TrainingOutcome:
    """Ray Train's ``fit()`` (it raises if the run fails), then the export of its best checkpoint."""
    payload = {
        "config": to_dict(config),
        "prepared": dataclasses.asdict(prepared),
        "mlflow_uri": uri,
        "mlflow_run_id": run_id,
    }
    trainer = build_trainer(config, payload, run_name, storage, callbacks)
    result = trainer.fit()
    if result.error:  # older Ray returned the error instead of raising it
        raise result.error
    best = _best_checkpoint(result)
    model_dir = export_best_model(prepared, config, best[0], run_dir / "model")
    logger.info("[train] best %s %.4f: exported %s", SCORE, best[1], model_dir)
    return TrainingOutcome(
        run_dir, model_dir, best[1], dict(result.metrics or {}), run_id, uri, dict(result.return_value or {})
    )


def _reopen_mlflow_run(uri: str, run_id: str | None) -> str | None:
    """Set a resumed run's earlier MLflow run back to RUNNING; None if there is none at ``uri``."""
    from mlflow.tracking import MlflowClient

    if run_id is None:
        return None
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
    except Exception:
        logger.warning("[train] MLflow run %s of the resumed run is not in %s: starting another", run_id, uri)
        return None
    client.update_run(run_id, status="RUNNING")
    return run_id


def _close_quietly(uri: str, run_id: str, status: str) -> None:
    """End the MLflow run as ``status``, if it is still RUNNING, without hiding the error that ended
    the run. (A sweep may have closed it already: a trial stopped by the scheduler is KILLED there,
    and its process, torn down by Tune, must not turn that into FAILED afterwards.)"""
    try:
        call_with_retries(
            lambda: _finish_mlflow(uri, run_id, status, only_if_running=True),
            what=f"marking MLflow run {run_id} {status}",
            timeout_s=60.0,
        )
    except Exception as error:
        logger.warning(
            "[train] could not mark MLflow run %s %s: %s", run_id, status, redact_text(str(error))[:300]
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


def evaluate_exported(config: Config, prepared: PreparedRun, model_dir: Path, run_id: str | None, uri: str):
    """The config's evaluation suite on the exported model, logged into the training run; returns its
    :class:`~imascl_ray.eval.runner.EvalOutcome`. The local suite also measures the monolingual
    structure the model kept against the pretrained student (``local/structure/<lang>``)."""
    from imascl_ray.eval.runner import EvalOutcome, evaluate_model
    from imascl_ray.eval.tracking import log_metrics

    pair_files = list(config.eval.pairs) or ([prepared.test] if prepared.test else [])
    if config.eval.suite == "local" and not pair_files:
        logger.warning("[eval] no test pairs (data.test_pairs = 0, eval.pairs empty): skipping evaluation")
        return EvalOutcome("local", {})
    reference = prepared.student if config.eval.suite == "local" else None
    outcome = evaluate_model(str(model_dir), config.eval.suite, pair_files=pair_files, reference=reference)
    if run_id is not None:
        log_metrics(outcome.metrics, run_id=run_id, tracking_uri=uri)
    return outcome


def log_training_corpus(config: Config, prepared: PreparedRun, uri: str, run_id: str) -> None:
    """The run's training split as its MLflow dataset input (the runs table's Dataset column)."""
    from imascl_ray.mlflow_model import log_training_corpus as log_corpus
    from imascl_ray.model_card import corpus_name

    name = f"{corpus_name(config.data.corpus)} {config.data.pair_set} (train)"
    log_corpus(uri, run_id, prepared.train, name[:500])


def publish_exported(
    config: Config, prepared: PreparedRun, outcome: TrainingOutcome, *, register: bool
) -> None:
    """Write the exported model's card, log it as the run's MLflow model, and register it when
    ``tracking.register_as`` says so and ``register`` (a sweep's nested trial runs leave that to the
    sweep): :func:`imascl_ray.train.publish.publish_run_model`."""
    from imascl_ray.train.publish import publish_run_model

    publish_run_model(
        config,
        outcome.model_dir,
        uri=outcome.mlflow_uri,
        run_id=outcome.mlflow_run_id,
        run_name=outcome.run_dir.name,
        evaluation=outcome.evaluation,
        summary=outcome.worker_summary,
        best_score=outcome.best_score,
        base_model_folder=prepared.student,
        register=register,
    )


def _finish_mlflow(uri: str, run_id: str, status: str, *, only_if_running: bool = False) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if only_if_running and client.get_run(run_id).info.status != "RUNNING":
        return
    client.set_terminated(run_id, status=status)
