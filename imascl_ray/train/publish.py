"""What a finished run leaves for the people who use its model: a model card, an MLflow model, a version.

:func:`publish_run_model` runs at the end of :func:`imascl_ray.train.trainer.run_training`, after the
exported model was evaluated: it writes the folder's ``README.md`` from the run's config and results
(:mod:`imascl_ray.model_card`), logs the folder as the run's MLflow sentence-transformers model (the
run's one copy of the weights in the store) and, with ``tracking.register_as=NAME``, registers it as a
new version of ``NAME``. A sweep registers its best trial instead (:func:`register_sweep_best`, called
by the sweep's last step), so its trials, which are nested runs, do not register themselves.

No Ray here: the driver calls these after the workers are gone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imascl_ray.config import Config

logger = logging.getLogger(__name__)

TAG_RUN = "imascl.run_name"
TAG_SWEEP = "imascl.sweep"
TAG_TRIAL = "imascl.trial_id"
TAG_PARENT = "imascl.parent_run_id"


def headline_metrics(
    suite: str, evaluation: Mapping[str, Any] | None, best_score: float | None = None
) -> dict[str, float]:
    """The numbers a model version shows: the best validation accuracy and the evaluation's means
    (``local/mean/*``, or the paper suite's ``paper/*``)."""
    flat: dict[str, float] = {}
    if best_score is not None and math.isfinite(best_score):
        flat["val/mean/acc"] = float(best_score)
    if evaluation:
        if suite == "local":
            from imascl_ray.eval.local_suite import flatten_local

            values = flatten_local(evaluation)
            flat |= {key: value for key, value in values.items() if key.startswith("local/mean/")}
        elif suite == "paper":
            from imascl_ray.eval.mteb_suite import flatten_paper

            flat |= {
                key: value for key, value in flatten_paper(evaluation).items() if key.startswith("paper/")
            }
    return {key: float(value) for key, value in flat.items() if math.isfinite(float(value))}


def publish_run_model(
    config: Config,
    model_dir: Path,
    *,
    uri: str,
    run_id: str | None,
    run_name: str,
    evaluation: Mapping[str, Any] | None,
    summary: Mapping[str, Any] | None,
    best_score: float | None,
    base_model_folder: str | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Card, MLflow model (unless ``tracking.log_model`` is off) and (when ``tracking.register_as`` is
    set and ``register``) a registered version; returns
    ``{"card": path, "model_uri": ..., "registered": "name/version" or None}``."""
    from imascl_ray.mlflow_model import log_sentence_transformer, metrics_description, register_model
    from imascl_ray.model_card import write_model_card

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
    if run_id is None or not (config.tracking.log_model or name):
        return published
    logged = log_sentence_transformer(uri, run_id, model_dir)
    published["model_uri"] = logged.model_uri
    logger.info("[mlflow] model logged: %s (also runs:/%s/model)", logged.model_uri, run_id)
    if name:
        metrics = headline_metrics(config.eval.suite, evaluation, best_score)
        version = register_model(
            uri,
            name,
            run_id=run_id,
            tags={TAG_RUN: run_name, **{key: f"{value:.4f}" for key, value in metrics.items()}},
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
    from imascl_ray.mlflow_model import metrics_description, register_model
    from imascl_ray.tune.tracking import find_child_run

    space = spec.space
    name = sweep_model_name(space.name, space.fixed.tracking.register_as)
    try:
        run_id = find_child_run(uri, spec.parent_run_id, best.trial_id) or spec.parent_run_id
        metrics = (
            {space.metric: float(best.best)} if best.best is not None and math.isfinite(best.best) else {}
        )
        metrics |= {
            key: float(value)
            for key, value in (best.evaluation or {}).items()
            if "/mean/" in key or key.startswith("paper/")
        }
        tags = {TAG_SWEEP: spec.sweep_name, TAG_TRIAL: best.trial_id, TAG_PARENT: spec.parent_run_id}
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
