"""What Ray Train costs per step: the bare loop against ``imascl-ray train`` on 1 and 2 workers.

The same training steps (same config, data, global batch and seed) four ways:

* ``bare``: :class:`imascl_ray.engine.loop.TrainingLoop` driven directly in this process, no Ray, every
  core the process has as torch threads, its reports going nowhere;
* ``bare_inline``: the same with the next batch assembled inline instead of a step ahead in a
  background thread (``TrainingLoop.prefetch = False``): what prefetching gains;
* ``workers_1``: :func:`imascl_ray.train.trainer.run_training`, what ``imascl-ray train`` calls, on 1 Ray
  Train worker with every core (``scaling.cpus_per_worker``), MLflow tracking as configured by default;
* ``workers_2``: the same on 2 workers, each encoding half of the same global batch on half the cores
  (gloo all-gather of the embeddings, DDP's gradient all-reduce).

The step time is measured *inside* the loop (:mod:`imascl_ray.engine.timing`, ``IMASCL_STEP_TIMING=1``,
which the local Ray cluster's workers inherit): each step from drawing its batch to the end of its report,
the first step of each run (warm-up) and the final validation left out; so Ray's start-up does not decide
the figure. The breakdown per step (means over the steady steps): ``next_batch`` (the wait for the batch
assembled in the background: texts, negatives, the teacher lookup), ``forward`` (tokenisation included:
``tokenize_s`` is the tokeniser's share, timed apart on the same batches), ``gather``, ``loss``,
``mean_over_ranks``, ``backward``, ``optimizer``, ``report`` (``ray.train.report`` under Ray, with the
checkpoint's upload to storage at checkpoint steps) and ``checkpoint`` (writing it). ``end_to_end_s`` is
each run's whole wall time: for Ray, ``run_training`` from preparation (reused) through the worker
group's start, the steps, the export of the best checkpoint (no evaluation: ``eval.suite=none``).

Rounds: every round runs each variant once, the order rotating, ``--rounds`` (>= 5) timed rounds after
``--warmup-rounds`` untimed ones. Ratios are per round (min / median / max); the headline
``workers_1_over_bare`` is the median over rounds of workers_1's mean step over the bare loop's (target:
<= 1.10). Wall time with all cores; the load average before and after is in ``stability``.

    python benchmarks/train_overhead.py --quick    # 5 rounds of 10 steps, < 5 minutes on 2 cores
    python benchmarks/train_overhead.py            # 6 rounds of 20 steps after a warm-up round
    python benchmarks/train_overhead.py --smoke    # tiny random model (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    add_work_dir,
    cores,
    emit,
    fill_defaults,
    interleaved,
    load_average,
    log,
    machine,
    median,
    ratio_summary,
    rounded,
    set_test_environment,
    small_run_overrides,
    stability,
)

TARGET_WORKERS_1_OVER_BARE = 1.10
MIN_ROUNDS = 5
VARIANTS = ("bare", "bare_inline", "workers_1", "workers_2")


def build_config(args: argparse.Namespace, work: Path):
    from imascl_ray.config import load_config

    return load_config(
        None,
        [
            *small_run_overrides(args.smoke, work),
            "loss.tms=true",
            "loss.lam=0.1",
            f"schedule.global_batch_size={args.global_batch}",
            f"schedule.max_steps={args.steps}",
            f"schedule.log_every={args.log_every}",
            f"schedule.eval_every={args.steps}",
            "scaling.precision=fp32",
            "scaling.max_failures=0",
            "eval.suite=none",
            f"tracking.output_dir={work}",
        ],
    )


def with_workers(config, workers: int):
    """``config`` on ``workers`` Ray Train workers, the cores split evenly between them."""
    threads = max(1, cores() // workers)
    scaling = dataclasses.replace(config.scaling, num_workers=workers, cpus_per_worker=float(threads))
    return dataclasses.replace(config, scaling=scaling)


def bare_run(config, prepared, *, prefetch: bool) -> dict[str, Any]:
    """The loop in this process: its timing summary and its whole wall time (building it included)."""
    from imascl_ray.engine.loop import RankContext, TrainingLoop

    started = time.perf_counter()
    loop = TrainingLoop(config, prepared, RankContext(), lambda metrics, checkpoint: None)
    loop.prefetch = prefetch
    summary = loop.run()
    return {"timing": summary["timing"], "end_to_end_s": time.perf_counter() - started}


def ray_run(config, workers: int, name: str) -> dict[str, Any]:
    """``run_training`` on ``workers`` workers: rank 0's timing summary and the call's wall time."""
    from imascl_ray.train.trainer import run_training

    started = time.perf_counter()
    outcome = run_training(with_workers(config, workers), run_name=name, evaluate=False)
    return {"timing": outcome.worker_summary["timing"], "end_to_end_s": time.perf_counter() - started}


def tokenize_seconds(config, prepared, steps: int) -> float:
    """Mean seconds per step the tokeniser takes on one rank's texts (the length pass of bucketing and
    each micro-batch's padded encoding, as ``BucketedEncoding`` calls it), timed apart on the run's
    first ``steps`` batches."""
    from imascl_ray.data import BatchPlan, read_corpus
    from imascl_ray.encoder import SentenceEncoder
    from imascl_ray.engine.encode import length_buckets, token_counts

    encoder = SentenceEncoder.from_pretrained(
        prepared.student, prefix=None, max_length=config.model.max_length
    )
    train = read_corpus(prepared.train)
    plan = BatchPlan(
        train, config.schedule.global_batch_size, 1, config.schedule.seed, priority=prepared.priority
    )
    batches = list(itertools.islice(plan.batches(0, 0), steps))
    started = time.perf_counter()
    for batch in batches:
        texts = [train.src[i] for i in batch.pair_indices] + [train.tgt[i] for i in batch.pair_indices]
        for bucket in length_buckets(token_counts(encoder, texts), config.scaling.micro_batch_size):
            encoder.tokenize([texts[i] for i in bucket])
    return (time.perf_counter() - started) / max(1, len(batches))


def summarise(runs: list[dict[str, Any]], pairs: int) -> dict[str, Any]:
    """One variant's figures over its rounds: medians (and min / max) of the per-run means."""
    steps = [run["timing"]["step_mean_s"] for run in runs]
    phases = sorted({name for run in runs for name in run["timing"]["phases_mean_s"]} - {"validate"})
    return {
        "step_mean_s": {
            "min": rounded(min(steps), 4),
            "median": rounded(median(steps), 4),
            "max": rounded(max(steps), 4),
        },
        "step_median_s": rounded(median([run["timing"]["step_median_s"] for run in runs]), 4),
        "pairs_per_s": rounded(pairs / median(steps), 4),
        "phases_mean_s": {
            name: rounded(median([run["timing"]["phases_mean_s"].get(name, 0.0) for run in runs]), 3)
            for name in phases
        },
        "steady_steps_per_run": runs[0]["timing"]["steps"],
        "end_to_end_s": rounded(median([run["end_to_end_s"] for run in runs]), 4),
        "runs": len(runs),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="5 rounds of 10 steps: < 5 minutes on 2 cores")
    mode.add_argument("--smoke", action="store_true", help="tiny random model, 2 rounds (for tests)")
    parser.add_argument("--global-batch", type=int, default=None, help="pairs per step (default 32)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (the first is warm-up)")
    parser.add_argument("--rounds", type=int, default=None, help=f"timed rounds (at least {MIN_ROUNDS})")
    parser.add_argument("--warmup-rounds", type=int, default=None, help="untimed rounds first")
    parser.add_argument("--log-every", type=int, default=None, help="steps between reports (default 5)")
    add_work_dir(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {"global_batch": 8, "steps": 4, "rounds": 2, "warmup_rounds": 0, "log_every": 2}
    elif args.quick:
        defaults = {"global_batch": 32, "steps": 10, "rounds": 5, "warmup_rounds": 0, "log_every": 5}
    else:
        defaults = {"global_batch": 32, "steps": 20, "rounds": 6, "warmup_rounds": 1, "log_every": 5}
    fill_defaults(args, defaults)
    if not args.smoke and args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    os.environ["IMASCL_STEP_TIMING"] = "1"  # the loop's timer; the local cluster's workers inherit it
    import ray
    import torch

    from imascl_ray.preparation import prepare_run
    from imascl_ray.train.session import ray_session

    torch.set_num_threads(cores())
    started, load_at_start = time.perf_counter(), load_average()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = build_config(args, work)
    prepared = prepare_run(config, work / ("overhead-smoke" if args.smoke else "overhead"))
    log(f"prepared in {time.perf_counter() - started:.1f}s")
    if ray.is_initialized():
        raise SystemExit("Ray is already initialised in this process; the benchmark starts its own cluster")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"

    def variant(name: str):
        def run(i: int) -> None:
            if name.startswith("bare"):
                result = bare_run(config, prepared, prefetch=name == "bare")
            else:
                result = ray_run(config, int(name[-1]), f"overhead-{tag}-{name}-{i}")
            runs[name].append(result)

        return run

    init_started = time.perf_counter()
    with ray_session(None, config, num_cpus=max(3, cores() + 1)):
        ray_init_s = time.perf_counter() - init_started
        load_before = load_average()
        times = interleaved(
            {name: variant(name) for name in VARIANTS},
            warmup=args.warmup_rounds,
            rounds=args.rounds,
            log=log,
        )
    torch.set_num_threads(cores())  # the workers' processes are gone; this one's threads as before
    load_after = load_average()
    timed = {name: result[args.warmup_rounds :] for name, result in runs.items()}
    step_times = {name: [run["timing"]["step_mean_s"] for run in result] for name, result in timed.items()}
    figures = {name: summarise(result, args.global_batch) for name, result in timed.items()}
    ratios = {
        "workers_1_over_bare": ratio_summary(step_times, "bare", "workers_1"),
        "workers_2_over_bare": ratio_summary(step_times, "bare", "workers_2"),
        "workers_2_over_workers_1": ratio_summary(step_times, "workers_1", "workers_2"),
        "inline_over_prefetch": ratio_summary(step_times, "bare", "bare_inline"),
    }
    end_to_end = {name: [run["end_to_end_s"] for run in result] for name, result in timed.items()}
    headline = ratios["workers_1_over_bare"]["median"]
    result: dict[str, Any] = {
        "benchmark": "train_overhead",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random" if args.smoke else "multilingual-e5-small (offline), word embeddings frozen",
        "global_batch": args.global_batch,
        "steps_per_run": args.steps,
        "log_every": args.log_every,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup_rounds,
        "torch_threads": cores(),
        "threads_per_worker": {"workers_1": max(1, cores()), "workers_2": max(1, cores() // 2)},
        "clock": "wall time, all cores; step times from inside the loop (warm-up step and validation out)",
        "variants": figures,
        "tokenize_s": rounded(tokenize_seconds(config, prepared, args.steps), 3),
        "workers_1_over_bare": headline,
        "workers_2_over_bare": ratios["workers_2_over_bare"]["median"],
        "inline_over_prefetch": ratios["inline_over_prefetch"]["median"],
        "ratios": ratios,
        "end_to_end_over_bare": {
            name: ratio_summary(end_to_end, "bare", name) for name in ("workers_1", "workers_2")
        },
        "ray_init_s": rounded(ray_init_s, 3),
        "round_seconds": {name: [rounded(value, 3) for value in values] for name, values in times.items()},
        "target": {"workers_1_over_bare": TARGET_WORKERS_1_OVER_BARE},
        "target_met": headline <= TARGET_WORKERS_1_OVER_BARE,
        "stability": stability(load_at_start, load_after, cores()) | {"load_at_timing_start": load_before},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
