"""Scaling with Ray Train workers: pairs/s with 1 and 2 workers, and what a run's start-up costs.

Each run is a real Ray Train run of the project (:func:`imascl_ray.train.trainer.build_trainer` with the
worker function every ``imascl-ray train`` uses) on a local Ray cluster of this process's own, after the
run was prepared once (corpus split, teacher cache). Same config for both worker counts: the offline
multilingual-e5-small (word embeddings frozen, as the quickstart), gettext en-xx pairs, the same global
batch (each of 2 workers encodes half of it), 1 CPU and 1 torch thread per worker, fp32; MLflow off.

Per run:

* ``pairs_per_s``: what the training loop reports for its last logging window (the first steps, which
  allocate, are left out), i.e. training only;
* ``fit_s``: the wall time of ``TorchTrainer.fit()``; ``loop_s``: rank 0's loop, steps + the final
  validation and checkpoint;
* ``startup_overhead_s = fit_s - loop_s``: Ray Train's controller and worker group, the process group,
  each worker building its loop (reading the corpus, loading the model: ``loop_build_s``, measured in
  this process for reference), the checkpoint upload and the teardown.

``ray_init_s`` is the start of the local cluster. ``tune_trial_overhead_s``: one Ray *Tune* trial whose
function trainable runs the same 2-worker Ray Train run (the pattern ``imascl-ray tune`` uses), minus that
run's own ``fit_s``: what Tune adds per trial.

    python benchmarks/scaling.py --quick      # one run per worker count; < 3 minutes on 2 cores
    python benchmarks/scaling.py              # interleaved 1, 2, 1, 2 workers, more steps
    python benchmarks/scaling.py --smoke      # tiny random model, seconds of training (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    add_work_dir,
    emit,
    fill_defaults,
    log,
    machine,
    median,
    rounded,
    set_test_environment,
    small_run_overrides,
)


def build_config(args: argparse.Namespace, work: Path):
    from imascl_ray.config import load_config

    return load_config(
        None,
        [
            *small_run_overrides(args.smoke, work),
            f"schedule.global_batch_size={args.global_batch}",
            f"schedule.max_steps={args.steps}",
            f"schedule.log_every={args.log_every}",
            f"schedule.eval_every={args.steps}",
            "scaling.cpus_per_worker=1",
            "scaling.precision=fp32",
            "scaling.max_failures=0",
            "eval.suite=none",
            f"tracking.output_dir={work}",
        ],
    )


def timed_run(config, prepared, workers: int, storage: Path, name: str) -> dict[str, Any]:
    """One Ray Train run with ``workers`` workers; its throughput and where its time went."""
    from imascl_ray.config import to_dict
    from imascl_ray.train.trainer import build_trainer

    config = dataclasses.replace(config, scaling=dataclasses.replace(config.scaling, num_workers=workers))
    payload = {"config": to_dict(config), "prepared": dataclasses.asdict(prepared)}
    trainer = build_trainer(config, payload, name, storage)
    started = time.perf_counter()
    result = trainer.fit()
    fit_s = time.perf_counter() - started
    if result.error:
        raise result.error
    summary = dict(result.return_value or {})
    loop_s = float(summary["seconds"])
    return {
        "workers": workers,
        "pairs_per_s": float(result.metrics["pairs_per_s"]),
        "fit_s": fit_s,
        "loop_s": loop_s,
        "startup_overhead_s": fit_s - loop_s,
        "steps": int(summary["global_step"]),
    }


def timed_tune_trial(config, prepared, storage: Path, name: str) -> dict[str, Any]:
    """One Ray Tune trial whose function trainable runs the same 2-worker Ray Train run.

    ``tune_overhead_s = tuner_fit_s - fit_s``: what Tune adds around a trial (its trial actor and
    placement group, the experiment state, result processing, teardown), over the Ray Train run inside.
    """
    from ray import cloudpickle, tune

    # The trial runs in a Ray worker that cannot import this script's modules: ship them by value.
    for module in (sys.modules[__name__], sys.modules["_common"]):
        cloudpickle.register_pickle_by_value(module)

    def trainable(_: dict) -> None:
        run = timed_run(config, prepared, 2, storage, f"{name}-train")
        tune.report({"fit_s": run["fit_s"], "loop_s": run["loop_s"]})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": 1}),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    tuner_fit_s = time.perf_counter() - started
    if grid.errors:
        raise grid.errors[0]
    fit_s = float(grid[0].metrics["fit_s"])
    return {"tuner_fit_s": tuner_fit_s, "fit_s": fit_s, "tune_overhead_s": tuner_fit_s - fit_s}


def loop_build_seconds(config, prepared) -> float:
    """How long one rank takes to build its :class:`TrainingLoop` (corpus, cache, model) in-process."""
    from imascl_ray.engine.loop import RankContext, TrainingLoop

    started = time.perf_counter()
    TrainingLoop(config, prepared, RankContext(), lambda metrics, checkpoint: None)
    return time.perf_counter() - started


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one run per worker count: < 3 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny random model (for tests)")
    parser.add_argument("--global-batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per run")
    parser.add_argument("--repeats", type=int, default=None, help="runs per worker count, interleaved")
    add_work_dir(parser)
    args = parser.parse_args(argv)
    defaults = (
        {"global_batch": 8, "steps": 4, "repeats": 1}
        if args.smoke
        else {"global_batch": 16, "steps": 8, "repeats": 1}
        if args.quick
        else {"global_batch": 32, "steps": 16, "repeats": 2}
    )
    fill_defaults(args, defaults)
    args.log_every = max(1, args.steps // 2)  # the last window leaves the first half of the steps out
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    import ray

    from imascl_ray.preparation import prepare_run
    from imascl_ray.train.session import ray_session

    started = time.perf_counter()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = build_config(args, work)
    prepared = prepare_run(config, work / ("scaling-smoke" if args.smoke else "scaling"))
    log(f"prepared in {time.perf_counter() - started:.1f}s")
    build_s = loop_build_seconds(config, prepared)
    runs: list[dict[str, Any]] = []
    if ray.is_initialized():
        raise SystemExit("Ray is already initialised in this process; the benchmark starts its own cluster")
    init_started = time.perf_counter()
    with ray_session(None, config, num_cpus=3), tempfile.TemporaryDirectory(prefix="imascl-scaling-") as tmp:
        ray_init_s = time.perf_counter() - init_started
        for repeat in range(args.repeats):
            for workers in (1, 2):
                run = timed_run(config, prepared, workers, Path(tmp), f"scaling-{workers}w-{repeat}")
                log(f"{workers} worker(s): {run}")
                runs.append(run)
        tune_trial = timed_tune_trial(config, prepared, Path(tmp), "scaling-tune-trial")
        log(f"one Tune trial: {tune_trial}")
    per_workers: dict[int, dict[str, float]] = {}
    for workers in (1, 2):
        mine = [run for run in runs if run["workers"] == workers]
        per_workers[workers] = {
            key: rounded(median([run[key] for run in mine]), 4)
            for key in ("pairs_per_s", "fit_s", "loop_s", "startup_overhead_s")
        }
    result = {
        "benchmark": "scaling",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random" if args.smoke else "multilingual-e5-small (offline), word embeddings frozen",
        "global_batch": args.global_batch,
        "steps_per_run": args.steps,
        "cpus_per_worker": 1,
        "ray_init_s": rounded(ray_init_s),
        "loop_build_s": rounded(build_s),
        "workers_1": per_workers[1],
        "workers_2": per_workers[2],
        "speedup_2_over_1": rounded(per_workers[2]["pairs_per_s"] / per_workers[1]["pairs_per_s"]),
        "train_startup_overhead_s": per_workers[2]["startup_overhead_s"],
        "tune_trial_overhead_s": rounded(tune_trial["tune_overhead_s"]),
        "tune_trial": {key: rounded(value, 4) for key, value in tune_trial.items()},
        "runs": [{k: v if isinstance(v, int) else rounded(v, 4) for k, v in run.items()} for run in runs],
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
