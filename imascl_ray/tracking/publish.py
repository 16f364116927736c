"""What a finished run leaves for the people who use its model: a model card, an MLflow model, a version.

:func:`publish_run_model` runs once at the end of :func:`imascl_ray.train.trainer.run_training`,
after the exported model was evaluated: it writes the folder's ``README.md`` (the run's one model card)
from the run's config and results (:mod:`imascl_ray.model_card`), logs the folder as the run's MLflow
sentence-transformers model (the run's one copy of the weights in the store) and, with
``tracking.register_as=NAME``, registers it as a new version of ``NAME``. A sweep registers its best
trial instead (:func:`register_sweep_best`, called by the sweep's last step), so its trials, which are
nested runs, do not register themselves.

No Ray here: the driver calls these after the workers are gone. The sweep's objects (its trial spec
and best record) are only read, so nothing here imports the training or the Tune layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imascl_ray.config import Config
from imascl_ray.tracking import tags as tag
from imascl_ray.tracking.runs import TrackedRun

logger = logging.getLogger(__name__)


def headline_metrics(eval_metrics: Mapping[str, float], best_score: float | None = None) -> dict[str, float]:
    """The numbers a model version shows: the best validation accuracy and, of the evaluation's flat
    metrics (:attr:`imascl_ray.eval.runner.EvalOutcome.metrics`), the means over language pairs
    (``local/mean/*``, ``paper/*``)."""
    flat = {key: float(value) for key, value in eval_metrics.items() if is_headline(key)}
    if best_score is not None:
        flat["val/mean/acc"] = float(best_score)
    return {key: value for key, value in flat.items() if math.isfinite(value)}


def is_headline(key: str) -> bool:
    """Whether an evaluation metric is a mean over language pairs or one of the paper's numbers."""
    return "/mean/" in key or key.startswith("paper/")


def publish_run_model(
    config: Config,
    model_dir: Path,
    run: TrackedRun | None,
    *,
    run_name: str,
    evaluation: Mapping[str, Any] | None,
    eval_metrics: Mapping[str, float],
    summary: Mapping[str, Any] | None,
    best_score: float | None,
    base_model_folder: str | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Card, MLflow model (unless ``tracking.log_model`` is off) and (when ``tracking.register_as`` is
    set and ``register``) a registered version; returns
    ``{"card": path, "model_uri": ..., "registered": "name/version" or None}``."""
    from imascl_ray.model_card import write_model_card
    from imascl_ray.tracking.models import log_sentence_transformer, metrics_description, register_model

    card = write_model_card(
        model_dir,
        config,
        name=run_name,
        evaluation=evaluation,
        summary=summary,
        best_score=best_score,
        base_model_folder=base_model_folder,
    )
    published: dict[str, Any] = {"card": card, "model_uri": None, "registered": None}
    name = config.tracking.register_as if register else None
    if run is None or not (config.tracking.log_model or name):
        return published
    logged = log_sentence_transformer(run.uri, run.run_id, model_dir)
    published["model_uri"] = logged.model_uri
    logger.info("[mlflow] model logged: %s (also runs:/%s/model)", logged.model_uri, run.run_id)
    if name:
        metrics = headline_metrics(eval_metrics, best_score)
        version = register_model(
            run.uri,
            name,
            run_id=run.run_id,
            tags={tag.RUN_NAME: run_name, **{key: f"{value:.4f}" for key, value in metrics.items()}},
            description=metrics_description(metrics, f"imascl-ray run {run_name}"),
        )
        published["registered"] = f"{name}/{version.version}"
    return published


def sweep_model_name(space_name: str, register_as: str | None = None) -> str:
    """The registered model a sweep's best goes to: ``tracking.register_as`` (the space file's
    ``overrides`` or ``--register-as``), else ``imascl-<space name>``."""
    return register_as or f"imascl-{space_name}"


def register_sweep_best(uri: str, spec: Any, best: Any, model_dir: Path | None) -> str | None:
    """Register a sweep's best trial as a new version of :func:`sweep_model_name`; returns
    ``name/version``.

    ``spec`` is the sweep's :class:`~imascl_ray.tune.trainable.TrialSpec`, ``best`` the best trial's
    :class:`~imascl_ray.tune.results.TrialRecord`. The version comes from the trial's child run (its
    logged model; or, if the scheduler stopped the trial before it logged one, ``model_dir`` logged
    into that run now), is tagged with the sweep, the trial and the parent run, and carries the trial's
    metrics as tags and as its description. A registry error is reported and the sweep's results stand
    (None is returned).
    """
    from imascl_ray.tracking.models import metrics_description, register_model
    from imascl_ray.tracking.sweeps import find_child_run

    space = spec.space
    name = sweep_model_name(space.name, space.fixed.tracking.register_as)
    try:
        run_id = find_child_run(uri, spec.parent_run_id, best.trial_id) or spec.parent_run_id
        metrics = (
            {space.metric: float(best.best)} if best.best is not None and math.isfinite(best.best) else {}
        )
        metrics |= {key: float(value) for key, value in (best.evaluation or {}).items() if is_headline(key)}
        tags = {tag.SWEEP: spec.sweep_name, tag.TRIAL: best.trial_id, tag.PARENT: spec.parent_run_id}
        version = register_model(
            uri,
            name,
            run_id=run_id,
            model_dir=model_dir,
            tags=tags | {key: f"{value:.4f}" for key, value in metrics.items()},
            description=metrics_description(
                metrics, f"best trial {best.trial_id} of sweep {spec.sweep_name}"
            ),
        )
    except Exception as error:  # the sweep's table, config and model are already written
        logger.warning("[tune] could not register the best model as %r: %s", name, error)
        return None
    logger.info("[tune] best model registered: models:/%s/%s", name, version.version)
    return f"{name}/{version.version}"
