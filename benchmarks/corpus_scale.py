"""Corpus scale: what 10^5, 10^6, 10^7 training pairs cost the driver and each Ray Train worker (issue 26).

For each size ``N``, ``N`` synthetic, distinct en-fr pairs are written to a Parquet corpus (not timed),
then one ``imascl-ray train`` run (:func:`imascl_ray.train.trainer.run_training` inside
:func:`imascl_ray.train.session.ray_session`, what the CLI calls) trains a tiny locally built student
(its own teacher, as the default config) on 2 Ray Train workers for ``--steps`` steps. Each size runs in
a fresh child process (this script with ``--one``), so the driver's peak RSS is that run's alone.

Per size:

* ``prepare_s``: the driver's preparation (:func:`imascl_ray.preparation.prepare_run`: split, student,
  teacher cache of every training sentence, the stream folder) and ``prepare_s_per_million_pairs``;
* ``worker_peak_rss_mib``: each rank's ``ru_maxrss`` at the end of its loop (the worker summary's
  ``peak_rss_mib``); ``worker_memory_mib``: per rank, its peak before the loop started and, at its end,
  resident memory split into anonymous (heap), file-backed (mapped files) and shared pages;
  ``driver_peak_rss_mib``: the child's own ``ru_maxrss``;
* ``steps_per_s``: the loop's last logging window (the second half of the steps), ``pairs_per_s / G``.

The last line of stdout is one JSON object; its ratios compare the largest size with the smallest:
``worker_rss_ratio`` (the larger rank's peak), ``driver_rss_ratio``, ``steps_per_s_ratio``, and
``prepare_s_per_million_pairs`` per size (linear preparation: about constant). Targets (issue 26): both
RSS ratios <= 1.2, steps/s ratio >= 0.9.

    python benchmarks/corpus_scale.py --quick      # 10^5 and 10^6 pairs
    python benchmarks/corpus_scale.py              # 10^5, 10^6, 10^7 pairs (teacher cache: long on CPU)
    python benchmarks/corpus_scale.py --smoke      # tiny sizes, for the tests
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    add_work_dir,
    emit,
    fill_defaults,
    load_average,
    log,
    machine,
    rounded,
    set_test_environment,
)

ENGLISH = ("the", "cat", "dog", "bird", "fish", "house", "car", "tree", "water", "fire", "book", "page")
FRENCH = (
    "le",
    "chat",
    "chien",
    "oiseau",
    "poisson",
    "maison",
    "auto",
    "arbre",
    "eau",
    "feu",
    "livre",
    "page",
)
TARGETS = {"worker_rss_ratio": 1.2, "driver_rss_ratio": 1.2, "steps_per_s_ratio": 0.9}


def write_synthetic_corpus(pairs: int, path: Path) -> Path:
    """``pairs`` distinct en-fr pairs (a number makes each unique) as a Parquet corpus; kept for reuse."""
    from imascl_ray.data import Corpus, write_corpus

    if path.exists():
        return path
    english, french, k = ENGLISH, FRENCH, len(ENGLISH)
    src = [f"{english[i % k]} {english[(i // k) % k]} {i}" for i in range(pairs)]
    tgt = [f"{french[i % k]} {french[(i // k) % k]} {i}" for i in range(pairs)]
    write_corpus(Corpus(["en"] * pairs, ["fr"] * pairs, src, tgt), path)
    return path


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One size in this (child) process: prepare and train through ``run_training``; its figures."""
    set_test_environment()
    import imascl_ray.train.trainer as trainer
    from imascl_ray.config import load_config
    from imascl_ray.testing import build_tiny_model
    from imascl_ray.train.session import ray_session

    work = Path(args.work_dir).resolve()
    model = build_tiny_model(work / "tiny-model")
    corpus = write_synthetic_corpus(args.one, work / f"corpus-{args.one}.parquet")
    config = load_config(
        None,
        [
            f"model.name={model}",
            "model.max_length=32",
            "teacher.max_length=32",
            "teacher.workers=0",
            f"data.corpus={corpus}",
            "data.languages=[en,fr]",
            "data.pair_set=en-fr",
            f"data.max_pairs_per_language_pair={args.one}",
            "data.validation_pairs=50",
            f"schedule.global_batch_size={args.global_batch}",
            f"schedule.max_steps={args.steps}",
            f"schedule.log_every={max(1, args.steps // 2)}",
            f"schedule.eval_every={args.steps}",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            "scaling.precision=fp32",
            "scaling.max_failures=0",
            "eval.suite=none",
            "tracking.log_model=false",
            f"tracking.output_dir={work / f'out-{args.one}'}",
            f"tracking.run_name=scale-{args.one}-{int(time.time())}",
        ],
    )
    timed: dict[str, float] = {}
    prepare = trainer.prepare_run

    def timed_prepare(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return prepare(*a, **k)
        finally:
            timed["prepare_s"] = time.perf_counter() - started

    trainer.prepare_run = timed_prepare  # the run's own preparation, timed where run_training calls it
    started = time.perf_counter()
    with ray_session(None, config, num_cpus=3):
        outcome = trainer.run_training(config, evaluate=False)
    wall = time.perf_counter() - started
    summary = outcome.worker_summary
    return {
        "pairs": args.one,
        "prepare_s": timed["prepare_s"],
        "worker_peak_rss_mib": summary.get("peak_rss_mib"),
        # per rank: peak before its loop, and at the end the resident parts (heap, mapped files, shared)
        "worker_memory_mib": summary.get("memory_mib"),
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps_per_s": float(outcome.metrics["pairs_per_s"]) / args.global_batch,
        "steps": int(summary.get("global_step", 0)),
        "wall_s": wall,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios of the largest size over the smallest, from the per-size figures."""
    small, large = rows[0], rows[-1]
    ratios = {
        "worker_rss_ratio": max(large["worker_peak_rss_mib"]) / max(small["worker_peak_rss_mib"]),
        "driver_rss_ratio": large["driver_peak_rss_mib"] / small["driver_peak_rss_mib"],
        "steps_per_s_ratio": large["steps_per_s"] / small["steps_per_s"],
    }
    met = {
        "worker_rss_ratio": ratios["worker_rss_ratio"] <= TARGETS["worker_rss_ratio"],
        "driver_rss_ratio": ratios["driver_rss_ratio"] <= TARGETS["driver_rss_ratio"],
        "steps_per_s_ratio": ratios["steps_per_s_ratio"] >= TARGETS["steps_per_s_ratio"],
    }
    return {
        **{key: rounded(value) for key, value in ratios.items()},
        "prepare_s_per_million_pairs": {
            str(row["pairs"]): rounded(row["prepare_s"] / row["pairs"] * 1e6) for row in rows
        },
        "targets": TARGETS,
        "targets_met": met,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10^5 and 10^6 pairs")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="pairs per run, ascending")
    parser.add_argument("--global-batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child's size
    add_work_dir(parser, "corpora, the tiny model and the runs")
    args = parser.parse_args(argv)
    defaults = (
        {"sizes": [400, 2000], "global_batch": 8, "steps": 4}
        if args.smoke
        else {"sizes": [10**5, 10**6], "global_batch": 32, "steps": 40}
        if args.quick
        else {"sizes": [10**5, 10**6, 10**7], "global_batch": 32, "steps": 40}
    )
    return fill_defaults(args, defaults)


def rounded_figures(value: Any) -> Any:
    """Every float in a row (nested in lists and dicts, such as ``worker_memory_mib``) to 3 figures."""
    if isinstance(value, dict):
        return {key: rounded_figures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded_figures(item) for item in value]
    return rounded(value) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.one is not None:
        result = run_one(args)
        print(json.dumps(result), flush=True)
        return result
    started, before = time.perf_counter(), load_average()
    rows = []
    for pairs in sorted(args.sizes):
        command = [sys.executable, __file__, "--one", str(pairs), "--work-dir", args.work_dir]
        command += ["--global-batch", str(args.global_batch), "--steps", str(args.steps)]
        log(f"{pairs} pairs: {' '.join(command[1:])}")
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"{pairs} pairs: {row}")
        rows.append(row)
    result = {
        "benchmark": "corpus_scale",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random BERT (student and its own teacher), 2 Ray Train workers, 1 CPU each",
        "global_batch": args.global_batch,
        "steps_per_run": args.steps,
        "sizes": [rounded_figures(row) for row in rows],
        **summarise(rows),
        "wall_s": round(time.perf_counter() - started, 1),
        "load_before": before,
        "load_after": load_average(),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
