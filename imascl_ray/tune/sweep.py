"""The sweep's driver: one ``Tuner`` over a :class:`~imascl_ray.tune.space.SearchSpace`, and its ending.

``run_sweep(space)`` (the caller has started or joined Ray):

1. makes the sweep folder ``<tracking.output_dir>/sweeps/<name>-<time>/`` (a copy of the space file,
   ``sweep.json`` with what a resume needs, ``events.jsonl``; Tune's own state under ``tune/``);
2. builds one teacher cache over the union of the training sentences of every searched data variant
   (pair sets), shared by all trials (:func:`imascl_ray.preparation.build_shared_teacher_cache`); a pair set
   the corpus lacks fails here, before any trial;
3. opens the MLflow parent run (:mod:`imascl_ray.tracking.sweeps`; failing or interrupted, the sweep
   ends it and its children still RUNNING, KILLED);
4. runs the ``Tuner`` (in a helper thread, so that Ctrl-C and SIGTERM reach imascl-ray's handler,
   :mod:`imascl_ray.interrupts`, not Tune's): the function trainable
   :func:`imascl_ray.tune.trainable.run_trial` (one ``TorchTrainer`` per trial), ``OptunaSearch``
   with a seeded TPE sampler (or, when the space has a ``grid``, Tune's grid search crossed with
   seeded random sampling), ``ASHAScheduler`` on the validation metric, and ``max_concurrent_trials``
   from the cluster's resources (a trial takes a CPU of its own besides its workers');
5. ranks the trials, prints and saves the table (``trials.txt``, ``trials.csv``), writes the best
   trial's config as a recipe ``imascl-ray train`` accepts (``best-config.yaml``), copies its exported
   model (``best-model/``), and closes the parent run with the summary.

``resume_sweep(folder)`` continues a sweep whose driver died: Tune restores its trials and searcher,
finished trials stay finished (and are not trained again), unfinished ones restart (their Ray Train
run resumes from its last checkpoint: same run name, same storage), and the remaining samples run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from imascl_ray.config import dump_yaml
from imascl_ray.errors import InputError
from imascl_ray.interrupts import call_interruptibly
from imascl_ray.preparation import PreparedRun, SharedTeacherCache, build_shared_teacher_cache
from imascl_ray.tracking import TrackedRun, redact_text, store_uri, without_credentials
from imascl_ray.tracking import sweeps as tracking
from imascl_ray.tracking import tags as tag
from imascl_ray.tracking.publish import register_sweep_best
from imascl_ray.tune import results as tables
from imascl_ray.tune.files import write_json_atomically
from imascl_ray.tune.placement_groups import remove_orphaned_placement_groups
from imascl_ray.tune.space import SearchSpace, load_space, max_concurrent_trials, space_to_dict
from imascl_ray.tune.trainable import TrialSpec, run_trial, trial_run_dir, trial_run_name

logger = logging.getLogger(__name__)

STATE_FILE = "sweep.json"
SPACE_COPY = "space.yaml"
TUNE_DIR = "tune"
BEST_CONFIG = "best-config.yaml"
BEST_MODEL = "best-model"


@dataclass
class SweepOutcome:
    """What a finished sweep leaves behind."""

    directory: Path
    records: list[tables.TrialRecord]
    """Every trial, best first; failed ones last (they can never be best)."""
    table: str
    best: tables.TrialRecord | None
    best_config: Path | None
    best_model: Path | None
    parent_run_id: str
    mlflow_uri: str

    @property
    def all_failed(self) -> bool:
        return not any(record.status in (tables.FINISHED, tables.STOPPED) for record in self.records)


def run_sweep(space: SearchSpace, *, name: str | None = None) -> SweepOutcome:
    """Run the sweep ``space`` describes from the start; see the module docstring."""
    space = dataclasses.replace(space, fixed=without_credentials(space.fixed))  # trials are pickled
    output = Path(space.fixed.tracking.output_dir).resolve()
    directory = _new_sweep_dir(output / "sweeps", name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    shutil.copyfile(space.path, directory / SPACE_COPY)
    commit = tracking.git_commit()
    tags = {tag.SPACE: str(space.path), tag.COMMIT: commit, tag.SWEEP: directory.name}
    logger.info("[tune] sweep %s: %s", directory.name, json.dumps(space_to_dict(space)))
    logger.info("[tune] resume it, if its driver dies, with: imascl-ray tune --resume %s", directory)

    variants = space.data_variants()
    logger.info("[tune] one teacher cache over %d data variant(s)", len(variants))
    shared = build_shared_teacher_cache(variants, directory)

    uri = store_uri(space.fixed)
    parent = tracking.start_parent_run(space.fixed, directory.name, space.describe(), tags)
    logger.info("[tune] MLflow parent run %s in %s", parent.run_id, uri)
    state = {
        "name": directory.name,
        "space": str(space.path.resolve()),
        "base_dir": str(space.path.resolve().parent),
        "cwd": os.getcwd(),
        "overrides": [redact_text(override) for override in space.overrides],  # no URI credentials
        "num_samples": space.num_samples,
        "git_commit": commit,
        "tags": tags,
        "mlflow_uri": uri,
        "parent_run_id": parent.run_id,
        "shared_teacher": dataclasses.asdict(shared),
        "space_summary": space_to_dict(space),
    }
    write_json_atomically(directory / STATE_FILE, state)
    spec = TrialSpec(space, directory.name, str(directory), parent.run_id, shared, tags)
    return _fit_and_finish(spec, parent, restore=False)


def read_state(directory: str | Path) -> dict[str, Any]:
    """A sweep folder's ``sweep.json`` (what ``--resume`` needs); an error if it is not a sweep folder."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise InputError(
            f"{directory}: not a sweep folder (no {STATE_FILE}); pass the folder a sweep printed"
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        damage = None if isinstance(state, dict) else f"a JSON {type(state).__name__}, not an object"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        damage = f"not JSON: {error}"
    if damage is not None:
        raise InputError(
            f"{path}: damaged sweep state ({damage}); it cannot be resumed: start the sweep again"
        )
    return state


def load_sweep_space(directory: str | Path) -> SearchSpace:
    """The space of a sweep folder, from its saved copy and the original command line."""
    state = read_state(directory)
    return load_space(
        Path(directory) / SPACE_COPY,
        state["overrides"],
        num_samples=state["num_samples"],
        base_dir=state["base_dir"],
        cwd=state["cwd"],
    )


def resume_sweep(directory: str | Path) -> SweepOutcome:
    """Continue the sweep in ``directory`` (its driver died): see the module docstring."""
    directory = Path(directory).resolve()
    state = read_state(directory)
    if not (directory / TUNE_DIR).is_dir():
        raise InputError(f"{directory}: the sweep never started its trials (no {TUNE_DIR}/); start it again")
    space = load_sweep_space(directory)
    shared = SharedTeacherCache(**state["shared_teacher"])
    parent = tracking.parent_run(state["mlflow_uri"], state["parent_run_id"])
    logger.info("[tune] resuming sweep %s", directory.name)
    spec = TrialSpec(space, state["name"], str(directory), parent.run_id, shared, state["tags"])
    return _fit_and_finish(spec, parent, restore=True)


# ---------------------------------------------------------------------------------------------------------


class SweepCallback(tune.Callback):
    """The driver's bookkeeping while trials run.

    - Closes the MLflow child run of a trial that could not close it itself: stopped early by ASHA
      (KILLED, tagged ``imascl.stopped_early``) or failed (FAILED).
    - Every few seconds, frees the placement groups of stopped trials' Train runs
      (:mod:`imascl_ray.tune.placement_groups`), so the next trial's workers can start.
    """

    def __init__(self, uri: str, parent_run_id: str, reap_every_s: float = 2.0) -> None:
        self.uri, self.parent_run_id = uri, parent_run_id
        self.reap_every_s = reap_every_s
        self._last_reap = 0.0

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if now - self._last_reap >= self.reap_every_s:
            self._last_reap = now
            try:
                remove_orphaned_placement_groups()
            except Exception as error:
                logger.warning("[tune] could not check for orphaned placement groups: %s", error)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial.trial_id, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial.trial_id, failed=True)

    def _close(self, trial_id: str, *, failed: bool) -> None:
        try:
            tracking.close_unfinished_child(self.uri, self.parent_run_id, trial_id, failed=failed)
        except Exception as error:  # MLflow down must not end the sweep
            logger.warning("[tune] could not close the MLflow run of trial %s: %s", trial_id, error)


def trial_dirname(trial) -> str:
    """Tune's folder of a trial: its id (stable across a resume; the table names trials by it)."""
    return trial.trial_id


def _searcher_and_space(space: SearchSpace):
    """``(search algorithm, param_space)``: the space's Tune domains, searched by Optuna TPE (seeded;
    ``OptunaSearch`` converts the domains itself) or, with a grid, by Tune's variant generator."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = [dict(point) for point in space.points_to_evaluate] or None
    param_space = space.param_space()
    if space.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(
            metric=space.metric,
            mode=space.mode,
            points_to_evaluate=points,
            sampler=optuna.samplers.TPESampler(seed=space.seed),
        )
        return searcher, param_space
    return BasicVariantGenerator(points_to_evaluate=points, random_state=space.seed), param_space


def _scheduler(space: SearchSpace):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    settings = space.scheduler
    if settings.name == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        metric=space.metric,
        mode=space.mode,
        time_attr=settings.time_attr,
        grace_period=settings.grace_period,
        max_t=settings.max_t,
        reduction_factor=settings.reduction_factor,
        # A trial ends itself at its last step (it still has to export and evaluate its best model):
        # stopping it there, as ASHA does by default at max_t, would cut that off.
        stop_last_trials=False,
    )


def _fit_and_finish(spec: TrialSpec, parent: TrackedRun, *, restore: bool) -> SweepOutcome:
    """Tune's ``fit()``, then the table, best config and model; the parent run ends as this does."""
    space, directory, uri = spec.space, Path(spec.sweep_dir), parent.uri
    if space.max_concurrent_trials is not None:
        concurrency = space.max_concurrent_trials
    else:
        concurrency = max_concurrent_trials(ray.cluster_resources(), space.trial_resources())
    logger.info(
        "[tune] %d trial(s), %d at a time (each: %s)",
        space.trial_count(),
        concurrency,
        ", ".join(f"{amount:g} {name}" for name, amount in space.trial_resources().items()),
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec), {"CPU": space.trial_cpus})
    if restore:
        tuner = tune.Tuner.restore(
            str(directory / TUNE_DIR), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    else:
        searcher, param_space = _searcher_and_space(space)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=_scheduler(space),
                num_samples=space.num_samples,
                max_concurrent_trials=concurrency,
                trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(directory),
                callbacks=[SweepCallback(uri, spec.parent_run_id)],
                verbose=1,
            ),
        )
    with parent:
        grid = call_interruptibly(tuner.fit)  # does not raise when trials fail: see the results
        records = tables.rank(_records(grid, spec), space.mode)
        return _finish(spec, parent, records)


def _records(grid, spec: TrialSpec) -> list[tables.TrialRecord]:
    """Tune's results as table records (status, searched values, best value and checkpoint, evaluation)."""
    records = []
    for result in grid:
        trial_id = Path(result.path).name
        frame = result.metrics_dataframe
        rows = frame.to_dict("records") if frame is not None else []
        last = dict(result.metrics or {})
        if rows and not last:
            last = rows[-1]
        best, best_step, checkpoint = tables.best_of(rows, spec.space.metric, spec.space.mode)
        if result.error is not None:
            status = tables.FAILED
        elif tables.is_closing(last):
            status = tables.FINISHED
        elif rows:
            status = tables.STOPPED
        else:
            status = tables.NOT_RUN
        steps = [row.get("step") for row in rows if isinstance(row.get("step"), (int, float))]
        evaluation = {
            key.removeprefix("eval/"): float(value)
            for key, value in last.items()
            if key.startswith("eval/") and isinstance(value, (int, float)) and math.isfinite(value)
        }
        records.append(
            tables.TrialRecord(
                trial_id=trial_id,
                run_name=trial_run_name(spec.sweep_name, trial_id),
                status=status,
                params={key: result.config.get(key) for key in spec.space.parameters},
                best=best,
                best_step=best_step,
                last_step=int(max(steps)) if steps else None,
                checkpoint=checkpoint,
                evaluation=evaluation,
                error=str(result.error) if result.error is not None else None,
            )
        )
    return records


def _finish(spec: TrialSpec, parent: TrackedRun, records: list[tables.TrialRecord]) -> SweepOutcome:
    space, directory, uri = spec.space, Path(spec.sweep_dir), parent.uri
    keys = list(space.parameters)
    table = tables.format_table(records, keys, space.metric)
    (directory / "trials.txt").write_text(table + "\n", encoding="utf-8")
    csv_path = tables.write_csv(records, keys, space.metric, directory / "trials.csv")
    best = tables.best_trial(records)
    best_config = best_model = None
    if best is not None:
        config = space.trial_config(best.params)
        config = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, run_name=None))
        best_config = directory / BEST_CONFIG
        dump_yaml(config, best_config)
        best_model = _export_best_model(spec, best, directory / BEST_MODEL)
        register_sweep_best(uri, spec, best, best_model)  # a new version of the space's registered model
    counts = {
        status: sum(r.status == status for r in records)
        for status in (tables.FINISHED, tables.STOPPED, tables.FAILED)
    }
    metrics = {f"trials/{status.replace(' ', '_')}": float(count) for status, count in counts.items()}
    if best is not None and best.best is not None:
        metrics[f"best/{space.metric}"] = best.best
    outcome = SweepOutcome(directory, records, table, best, best_config, best_model, spec.parent_run_id, uri)
    artifacts = [directory / "trials.txt", csv_path] + ([best_config] if best_config else [])
    tracking.log_sweep_summary(parent, metrics=metrics, artifacts=artifacts)
    if outcome.all_failed:
        parent.fail_on_exit()
    return outcome


def _export_best_model(spec: TrialSpec, best: tables.TrialRecord, out: Path) -> Path | None:
    """The best trial's exported model, copied; or, if the scheduler stopped it before it exported one,
    exported now from its best checkpoint."""
    run_dir = trial_run_dir(spec, best.trial_id)
    if out.exists():
        shutil.rmtree(out)
    if (run_dir / "model").is_dir():
        shutil.copytree(run_dir / "model", out)
        return out
    if best.checkpoint:
        from ray.train import Checkpoint

        from imascl_ray.train.trainer import export_best_model

        config = spec.space.trial_config(best.params)
        prepared = PreparedRun.load(run_dir)
        return export_best_model(prepared, config, Checkpoint(best.checkpoint), out, with_card=True)
    logger.warning("[tune] the best trial %s left no model or checkpoint to export", best.trial_id)
    return None


def _new_sweep_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(100):
        candidate = parent / (name if attempt == 0 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate.resolve()
    raise RuntimeError(f"could not make a fresh sweep folder under {parent}")
