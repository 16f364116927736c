"""Teacher-cache build speed: this process against 1 and 2 Ray Data CPU actors (one thread each).

Every variant builds the same cache from scratch (a fresh folder each time) with
:meth:`imascl_ray.teacher.TeacherCache.build`: ``in_process`` embeds in this process on every core it has
(the path of a run without a cluster, timed as a user sees it); ``actors_1`` / ``actors_2`` hand the
shards to :class:`imascl_ray.preparation.teacher_pool.RayDataEmbedder` with 1 or 2 CPU actors of 1 CPU and 1
torch thread each, on a local Ray cluster of this process's own (the path of ``teacher.workers=N``). The
sentences are a seeded sample of the unique sentences of this machine's gettext corpus (en, fr, ja,
ko, ru); the teacher is the offline multilingual-e5-small with the quickstart's settings (``query: ``
prefix, ``max_length`` 128, batches of 32). The variants run interleaved (``_common.interleaved``: at
least 5 rounds, the order rotating each round) and the caches are checked equal (within 1e-6) and of
one fingerprint.

Per variant and round, in sentences per second: ``end_to_end`` (the whole build: actors start and load
the teacher, shards, assembly), ``steady`` (after the first shard of every actor has come back, i.e.
with the actors' start-up left out: what a large corpus sees) and ``startup_s`` (build start to the
first shard). Every ratio comes with its min / median / max over the rounds (``ratios``), and the load
average before and after the timing with ``stability``. Quick mode gives every actor 8 or more shards
after its first one, so the steady rate is read over most of a build, not decided by the start-up. From
the medians, ``break_even_sentences`` is the corpus size from which the 2-actor pool's build (its
start-up plus the sentences at its steady rate) is faster end to end than the in-process one.
Targets: ``steady_2_over_1 >= 1.6``; break-even at or below 10^5 sentences.

    python benchmarks/teacher_cache.py --quick   # 512 sentences, 5 rounds: under 5 minutes on 2 cores
    python benchmarks/teacher_cache.py           # 2048 sentences, 5 rounds
    python benchmarks/teacher_cache.py --smoke   # tiny random model (tests)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
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
    stability,
)

VARIANTS = {"in_process": 0, "actors_1": 1, "actors_2": 2}
TARGET = 1.6
BREAK_EVEN_TARGET = 100_000
MIN_ROUNDS = 5


def benchmark_sentences(args: argparse.Namespace, work: Path) -> tuple[str, list[str]]:
    """The teacher (a folder) and a seeded sample of ``args.sentences`` unique corpus sentences."""
    from imascl_ray.config import load_config
    from imascl_ray.preparation.splits import load_source_corpus
    from imascl_ray.preparation.student import OFFLINE_MODEL, resolve_model

    if args.smoke:
        from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

        model = str(build_tiny_model(work / "tiny-model"))
        pool = synthetic_parallel_corpus(args.sentences, pair_names=("en-fr",)).sentences()
    else:
        model = resolve_model(OFFLINE_MODEL)
        config = load_config(None, ["data.corpus=gettext", f"tracking.output_dir={work}"])
        pool = load_source_corpus(config, work / "cache").sentences()
    return model, random.Random(0).sample(pool, min(args.sentences, len(pool)))


class Timed:
    """A :class:`~imascl_ray.teacher.ShardEmbedder` wrapper that stamps when each shard came back."""

    def __init__(self, embedder) -> None:
        self.embedder, self.arrivals = embedder, []

    def __call__(self, teacher, sentences, shards, batch_size):
        from imascl_ray.teacher import embed_in_process

        self.started = time.perf_counter()
        for shard, rows in (self.embedder or embed_in_process)(teacher, sentences, shards, batch_size):
            self.arrivals.append((time.perf_counter(), len(shard)))
            yield shard, rows


def steady_rate(timed: Timed, actors: int) -> float:
    """Sentences per second after the first shard of each of ``actors`` actors (1 in process)."""
    skip = max(actors, 1)
    if len(timed.arrivals) <= skip:
        return float("nan")
    start = timed.arrivals[skip - 1][0]
    rows = sum(count for _, count in timed.arrivals[skip:])
    return rows / (timed.arrivals[-1][0] - start)


def startup_s(timed: Timed) -> float:
    """Seconds from the build's start to its first finished shard (actors started, teacher loaded)."""
    return timed.arrivals[0][0] - timed.started if timed.arrivals else float("nan")


def break_even(startup: float, steady: float, in_process: float) -> float | None:
    """Sentences from which ``startup + n / steady`` beats ``n / in_process`` (None: never)."""
    if not steady > in_process:
        return None
    return startup / (1 / in_process - 1 / steady)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="512 sentences, 5 rounds")
    mode.add_argument("--smoke", action="store_true", help="tiny random model (for tests)")
    parser.add_argument("--sentences", type=int, default=None)
    parser.add_argument("--shard-size", type=int, default=None, help="sentences per shard")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (at least 5)")
    add_work_dir(parser, "the gettext corpus cache")
    args = parser.parse_args(argv)
    defaults = (
        {"sentences": 96, "shard_size": 16, "rounds": 1}
        if args.smoke
        else {"sentences": 512, "shard_size": 32, "rounds": MIN_ROUNDS}
        if args.quick
        else {"sentences": 2048, "shard_size": 64, "rounds": MIN_ROUNDS}
    )
    fill_defaults(args, defaults)
    if not args.smoke and args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    import numpy as np
    import ray
    import torch

    from imascl_ray.preparation.teacher_pool import RayDataEmbedder
    from imascl_ray.teacher import Teacher, TeacherCache

    started = time.perf_counter()
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model, sentences = benchmark_sentences(args, work)
    log(f"{len(sentences)} sentences, shards of {args.shard_size}, teacher {model}")
    torch.set_num_threads(cores())  # in process: every core, as a run without a cluster has
    max_length = 32 if args.smoke else 128
    teacher = Teacher.from_pretrained(model, prefix="query: ", max_length=max_length)
    if ray.is_initialized():
        raise SystemExit("Ray is already initialised in this process; the benchmark starts its own cluster")
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    caches: dict[str, Any] = {}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    startups: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        with tempfile.TemporaryDirectory(prefix="imascl-teacher-cache-") as tmp:

            def build(name: str):
                def run(round_index: int) -> None:
                    actors = VARIANTS[name]
                    pool = RayDataEmbedder(actors, cpus_per_worker=1, use_gpu=False) if actors else None
                    timed = Timed(pool)
                    caches[name] = TeacherCache.build(
                        teacher,
                        sentences,
                        Path(tmp) / f"{name}-{round_index}",
                        batch_size=32,
                        shard_size=args.shard_size,
                        show_progress=False,
                        embedder=timed,
                    )
                    rates[name].append(steady_rate(timed, actors))
                    startups[name].append(startup_s(timed))

                return run

            load_before = load_average()
            times = interleaved(
                {name: build(name) for name in VARIANTS}, warmup=0, rounds=args.rounds, log=log
            )
            load_after = load_average()
            fingerprints = {cache.fingerprint for cache in caches.values()}
            reference = np.asarray(caches["in_process"].embeddings)
            max_difference = max(
                float(np.abs(np.asarray(cache.embeddings) - reference).max()) for cache in caches.values()
            )
    finally:
        ray.shutdown()
    end_to_end = {name: rounded(len(sentences) / median(times[name])) for name in VARIANTS}
    steady = {name: rounded(median(rates[name])) for name in VARIANTS}
    ratio = steady["actors_2"] / steady["actors_1"]
    # Per-round ratios: rates are "faster = bigger", so pass them as (slow, fast) to ratio_summary,
    # which divides its second argument's values by its first's.
    ratios = {
        "steady_2_over_1": ratio_summary(rates, "actors_1", "actors_2"),
        "end_to_end_2_over_1": ratio_summary(times, "actors_2", "actors_1"),
        "steady_2_actors_over_in_process": ratio_summary(rates, "in_process", "actors_2"),
        "end_to_end_2_actors_over_in_process": ratio_summary(times, "actors_2", "in_process"),
    }
    startup = {name: rounded(median(values)) for name, values in startups.items()}
    even = break_even(startup["actors_2"], steady["actors_2"], steady["in_process"])
    result = {
        "benchmark": "teacher_cache",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random" if args.smoke else "multilingual-e5-small (offline)",
        "sentences": len(sentences),
        "shard_size": args.shard_size,
        "rounds": args.rounds,
        "threads_per_worker": 1,
        "in_process_threads": torch.get_num_threads(),
        "clock": "wall time",
        "end_to_end_sentences_per_s": end_to_end,
        "steady_sentences_per_s": steady,
        "startup_s": startup,
        "steady_2_over_1": rounded(ratio),
        "end_to_end_2_over_1": rounded(end_to_end["actors_2"] / end_to_end["actors_1"]),
        "steady_2_actors_over_in_process": rounded(steady["actors_2"] / steady["in_process"]),
        "ratios": ratios,
        "break_even_sentences": None if even is None else int(even),
        "target": f"steady_2_over_1 >= {TARGET}; break_even_sentences <= {BREAK_EVEN_TARGET}",
        "target_met": bool(ratio >= TARGET),
        "break_even_target_met": even is not None and even <= BREAK_EVEN_TARGET,
        "stability": stability(load_before, load_after, torch.get_num_threads()),
        "same_fingerprint": len(fingerprints) == 1,
        "max_abs_difference": max_difference,
        "build_s": {name: [rounded(t) for t in times[name]] for name in VARIANTS},
        "steady_per_round": {name: [rounded(r) for r in rates[name]] for name in VARIANTS},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
