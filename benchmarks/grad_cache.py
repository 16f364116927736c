"""Memory and time of the uncached and the cached (GradCache) soft step, and sentence-transformers'.

Two gloo processes on CPU (``W = 2``, one torch thread each), a fresh pair for each global batch ``N``
(128, 512 and 2,048 pairs). Each rank builds the project's real :class:`TrainingLoop` (DDP, the teacher
cache, AdamW) on the quickstart's data (the gettext localisation pairs, en-xx, ``max_length`` 64, mixed
language pairs so that a batch of 2,048 fits the corpus) with Priority labels, TMS (``lam = 0.1``) and
the local form of the loss, and times, interleaved, one optimisation step of:

* ``uncached``: ``scaling.encoding=bucketed`` (the default step: length-bucketed micro-batches with
  gradient, all of the rank's activations alive until backward);
* ``cached``: ``scaling.encoding=cached`` (GradCache: the same micro-batches without gradient, the loss
  and its gradient w.r.t. the embeddings, then each micro-batch re-encoded with gradient);
* ``st_cached``: sentence-transformers' ``CachedMultipleNegativesSymmetricRankingLoss`` on the same
  rank slices (its collator, ``gather_across_devices=True``, ``mini_batch_size`` = ours, DDP around the
  model as its trainer does, clipping, AdamW): the peer's GradCache for the hard-label loss.

Per variant and rank: ``peak_rss_mib``, the process's peak resident memory during the step (the kernel's
high-water mark ``VmHWM``, reset before each step through ``/proc/self/clear_refs``; the ranks run with
``MALLOC_MMAP_THRESHOLD_=65536`` so freed matrices leave at once), ``rise_mib`` (that peak minus the
resident memory just before the step: what the step itself needs, without the weights) and ``seconds``
(the slower rank, median over the timed rounds). Targets: the cached step's peak at the largest batch
within 1.5x of its peak at the smallest, and its time at most 1.5x the uncached step's at every batch.

Every variant first takes one untimed step on a 16-pair batch (first-call costs). ``--quick`` keeps the
quickstart's model config but only its first 2 transformer layers (the same mE5-small weights,
``--layers``; the teacher is that model too), and times one round with no full-size warm-up; the full
mode uses all 12 layers, a full-size warm-up round and 3 timed rounds, and runs the uncached step only up to
``--uncached-max`` pairs (at 2,048 pairs its fp32 activations would need ~14 GB per rank). The last line
of stdout is one JSON object.

    python benchmarks/grad_cache.py --quick      # 2-layer model; ~10 minutes on 2 shared cores
    python benchmarks/grad_cache.py --smoke      # tiny random model and corpus, seconds (tests)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import add_work_dir, emit, fill_defaults, log, machine, median, rounded, set_test_environment
from gather_memory import _ranks_return_freed_memory, _rss_kib

WORLD = 2
VARIANTS = ("cached", "uncached", "st_cached")
TARGET_PEAK_GROWTH = 1.5
TARGET_CACHED_OVER_UNCACHED = 1.5


def _peak_kib() -> int:
    """The process's resident high-water mark (``VmHWM``) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise OSError("no VmHWM in /proc/self/status")


def _reset_peak() -> bool:
    """Reset the high-water mark to the current resident memory (Linux >= 4.0); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rank(rank: int, init_file: str, out_dir: str, spec: dict[str, Any]) -> None:
    """One rank: build the loop and the peer's step, time the variants interleaved, write ``rank<r>.json``."""
    import torch
    import torch.distributed as dist

    from imascl_ray.config import load_config
    from imascl_ray.engine.loop import RankContext, TrainingLoop
    from imascl_ray.preparation import PreparedRun

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    config = load_config(None, spec["overrides"])
    prepared = PreparedRun.load(spec["prepared"])
    loop = TrainingLoop(config, prepared, RankContext(rank=rank, world_size=WORLD), lambda m, c: None)
    batches = [batch for epoch in range(4) for batch in loop.plan.batches(epoch, 0)]
    st_step = _sentence_transformers_step(loop, prepared.student, spec["micro_batch"])

    def ours(encoding: str):
        scaling = replace(config.scaling, encoding=encoding)
        configured = replace(config, scaling=scaling)

        def step(batch) -> None:
            loop.config = configured
            loop.step(batch)

        return step

    steps = {"cached": ours("cached"), "uncached": ours("bucketed"), "st_cached": st_step}
    variants = [v for v in VARIANTS if v != "uncached" or spec["run_uncached"]]
    result: dict[str, Any] = {"rank": rank, "pairs": spec["pairs"], "peak_reset": _reset_peak()}
    figures: dict[str, dict[str, list[float]]] = {
        v: {"seconds": [], "cpu_seconds": [], "peak": [], "rise": []} for v in variants
    }
    small = 8 * WORLD  # one untimed step of each variant on a small batch: first-call costs out of the way
    first = batches[0]
    for name in variants:
        steps[name](
            replace(first, pair_indices=first.pair_indices[:small], anchor_sides=first.anchor_sides[:small])
        )
    rounds = spec["warmup"] + spec["rounds"]
    for r in range(rounds):
        batch = batches[r % len(batches)]  # every variant steps on the same batch: the same lengths
        for name in variants[r % len(variants) :] + variants[: r % len(variants)]:
            gc.collect()
            dist.barrier()
            before = _rss_kib()
            _reset_peak()
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name](batch)
            cpu = torch.tensor(time.process_time() - cpu_start)
            elapsed = torch.tensor(time.perf_counter() - start)
            peak = _peak_kib()
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            dist.all_reduce(cpu, op=dist.ReduceOp.MAX)
            if r >= spec["warmup"]:
                figures[name]["seconds"].append(float(elapsed))
                figures[name]["cpu_seconds"].append(float(cpu))
                figures[name]["peak"].append(peak / 1024)
                figures[name]["rise"].append(max(0, peak - before) / 1024)
    if spec["profile"]:
        for name in ("cached", "uncached"):
            if name in variants:
                result[f"{name}_phases_ms"] = _profiled_phases(steps[name], batches[0])
    for name, values in figures.items():
        result[name] = {
            "seconds": median(values["seconds"]),
            "cpu_seconds": median(values["cpu_seconds"]),
            "peak_rss_mib": max(values["peak"]),
            "rise_mib": max(values["rise"]),
            "rounds": len(values["seconds"]),
        }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


PHASES = ("imascl/embed", "imascl/loss", "imascl/backward", "imascl/re-encode", "imascl/optimizer")
"""The ``torch.profiler`` ranges of :meth:`TrainingLoop.step`."""


def _profiled_phases(step, batch) -> dict[str, float]:
    """One more step under ``torch.profiler`` (after the timed ones: the profiler slows it): the wall
    milliseconds of each phase range of the step, and the whole step's."""
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile

    dist.barrier()
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step(batch)
    total_ms = 1000 * (time.perf_counter() - started)
    phases = {event.key: event.cpu_time_total / 1000 for event in profiler.key_averages()}
    by_phase = {name.split("/")[1]: rounded(phases.get(name, 0.0), 4) for name in PHASES}
    return {**by_phase, "step": rounded(total_ms, 4)}


def _sentence_transformers_step(loop, student: str, micro_batch: int):
    """sentence-transformers' cached symmetric InfoNCE on this rank's slices, as its trainer runs it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesSymmetricRankingLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer

    config = loop.config
    model = SentenceTransformer(student, device="cpu")
    model.max_seq_length = config.model.max_length
    if config.model.freeze_embeddings:
        model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    # find_unused_parameters as Hugging Face's Trainer sets it for a model that is no PreTrainedModel: the
    # pooler sentence-transformers loads gets no gradient.
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 6.2 points to CachedMNRL(directions=...)
        loss = CachedMultipleNegativesSymmetricRankingLoss(
            model, scale=1.0 / config.loss.tau, mini_batch_size=micro_batch, gather_across_devices=True
        )

    class TrainerMethods:  # the trainer's method that reads no trainer state (it recurses through self)
        override_model_in_loss = SentenceTransformerTrainer.override_model_in_loss

    loss = TrainerMethods().override_model_in_loss(loss, ddp)  # DDP into the loss, as its trainer does
    collator = SentenceTransformerDataCollator(
        preprocess_fn=model.preprocess, prompts=loop.student.prefix or None
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, fused=True)

    def step(batch) -> None:
        rows = batch.rank_slice(loop.context.rank)
        pairs = [{"anchor": loop.train.src[i], "positive": loop.train.tgt[i]} for i in rows]
        features, labels = SentenceTransformerTrainer.collect_features(None, collator(pairs))
        loss(features, labels).backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(pairs: int, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Both ranks' figures for a global batch of ``pairs`` pairs (a fresh pair of processes)."""
    import torch.multiprocessing as mp

    spec = {**spec, "pairs": pairs, "overrides": [*spec["overrides"], f"schedule.global_batch_size={pairs}"]}
    spec["run_uncached"] = spec["uncached_max"] is None or pairs <= spec["uncached_max"]
    with tempfile.TemporaryDirectory(prefix="imascl-grad-cache-") as folder, _ranks_return_freed_memory():
        mp.start_processes(
            _rank,
            args=(str(Path(folder) / "init"), folder, spec),
            nprocs=WORLD,
            join=True,
            start_method="spawn",
        )
        return [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(WORLD)]


def summarise(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: the larger rank's memory, the slower rank's time; the cached-over-uncached ratios."""
    row: dict[str, Any] = {"pairs": ranks[0]["pairs"], "peak_reset": all(r["peak_reset"] for r in ranks)}
    for name in VARIANTS:
        if name not in ranks[0]:
            continue
        row[name] = {
            key: rounded(max(r[name][key] for r in ranks), 4)
            for key in ("seconds", "cpu_seconds", "peak_rss_mib", "rise_mib")
        }
    for name in ("cached", "uncached"):
        if f"{name}_phases_ms" in ranks[0]:
            row[f"{name}_phases_ms"] = ranks[0][f"{name}_phases_ms"]  # rank 0's profile
    if "uncached" in row:
        row["cached_over_uncached"] = {
            key: rounded(row["cached"][key] / row["uncached"][key]) if row["uncached"][key] else None
            for key in ("seconds", "cpu_seconds", "peak_rss_mib", "rise_mib")
        }
    row["st_cached_over_cached_seconds"] = rounded(row["st_cached"]["seconds"] / row["cached"]["seconds"])
    row["st_cached_over_cached_cpu_seconds"] = rounded(
        row["st_cached"]["cpu_seconds"] / row["cached"]["cpu_seconds"]
    )
    return row


def prepare(args: argparse.Namespace) -> tuple[list[str], str]:
    """Prepare the run once (data split, teacher cache) in the parent: the overrides and its folder."""
    from imascl_ray.config import load_config
    from imascl_ray.data import write_corpus
    from imascl_ray.preparation import prepare_run, resolve_model

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

        model = str(build_tiny_model(work / "tiny-model"))
        corpus = write_corpus(synthetic_parallel_corpus(400), work / "tiny-corpus.parquet")
        data = [f"data.corpus={corpus}", "data.languages=[en,fr]", "data.pair_set=en-fr"]
        data += ["data.max_pairs_per_language_pair=400", "data.validation_pairs=20"]
        name = "run-smoke"
    else:
        from train_throughput import truncated_student

        model = truncated_student(resolve_model("offline:multilingual-e5-small"), args.layers, work)
        data = ["data.corpus=gettext", "data.languages=[en,fr,ja,ko,ru]", "data.pair_set=en-xx"]
        # Enough pairs for the largest batch (4 language pairs, mixed), no more: the teacher cache is
        # built once per corpus, and it is the slowest part of a first run.
        per_pair = max(args.sizes) // 4 + 150
        data += [f"data.max_pairs_per_language_pair={per_pair}", "data.validation_pairs=20"]
        name = f"run-grad-cache-{args.layers or 'all'}-layers"
    overrides = [
        f"model.name={model}",
        f"model.max_length={args.max_length}",
        "model.freeze_embeddings=true",
        f"teacher.max_length={args.max_length}",
        *data,
        "data.mixed_batches=true",
        "loss.name=soft",
        "loss.labels=priority",
        "loss.tau=0.1",
        "loss.teacher_tau=0.05",
        "loss.tms=true",
        "loss.lam=0.1",
        "loss.local=true",
        f"schedule.global_batch_size={max(args.sizes)}",
        "schedule.max_steps=1000",
        f"scaling.num_workers={WORLD}",
        f"scaling.micro_batch_size={args.micro_batch}",
        "scaling.precision=fp32",
        f"tracking.output_dir={work}",
    ]
    started = time.perf_counter()
    prepared = prepare_run(load_config(None, overrides), work / name)
    log(f"prepared in {time.perf_counter() - started:.1f}s: student {prepared.student}")
    return overrides, prepared.directory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 transformer layers, 1 round")
    mode.add_argument("--smoke", action="store_true", help="tiny random model and corpus (for tests)")
    parser.add_argument("--sizes", type=int, nargs="+", help="global batches in pairs (multiples of 2)")
    parser.add_argument("--layers", type=int, default=None, help="transformer layers kept (quick: 2)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (quick 1, full 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (quick 0, full 1)")
    parser.add_argument("--micro-batch", type=int, default=64, help="texts per micro-batch (all variants)")
    parser.add_argument("--max-length", type=int, default=64, help="max_length (the quickstart's)")
    parser.add_argument(
        "--uncached-max", type=int, default=None, help="largest batch the uncached step runs at (full: 512)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more step of ours per size under torch.profiler: milliseconds per phase (rank 0)",
    )
    add_work_dir(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {"sizes": [16, 64], "layers": None, "rounds": 1, "warmup": 0, "uncached_max": None}
        args.micro_batch, args.max_length = min(args.micro_batch, 8), min(args.max_length, 32)
    elif args.quick:
        defaults = {"sizes": [128, 512, 2048], "layers": 2, "rounds": 1, "warmup": 0, "uncached_max": None}
    else:
        defaults = {"sizes": [128, 512, 2048], "layers": None, "rounds": 3, "warmup": 1, "uncached_max": 512}
    fill_defaults(args, defaults)
    if any(size % WORLD for size in args.sizes):
        parser.error(f"--sizes must be multiples of {WORLD}")
    args.sizes = sorted(args.sizes)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    started = time.perf_counter()
    overrides, prepared = prepare(args)
    spec = {
        "overrides": overrides,
        "prepared": prepared,
        "micro_batch": args.micro_batch,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "uncached_max": args.uncached_max,
        "profile": args.profile,
    }
    rows = []
    for pairs in args.sizes:
        log(f"N = {pairs} pairs on {WORLD} gloo processes")
        rows.append(summarise(measure(pairs, spec)))
        log("  " + json.dumps({k: v for k, v in rows[-1].items() if k != "pairs"}))
    smallest, largest = rows[0], rows[-1]
    growth = largest["cached"]["peak_rss_mib"] / smallest["cached"]["peak_rss_mib"]
    time_ratios = {row["pairs"]: row["cached_over_uncached"]["seconds"] for row in rows if "uncached" in row}
    cpu_ratios = {
        row["pairs"]: row["cached_over_uncached"]["cpu_seconds"] for row in rows if "uncached" in row
    }
    result = {
        "benchmark": "grad_cache",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random"
        if args.smoke
        else f"multilingual-e5-small (offline), {args.layers or 'all 12'} transformer layers",
        "world_size": WORLD,
        "micro_batch_size": args.micro_batch,
        "max_length": args.max_length,
        "loss": "priority labels, TMS lam=0.1, local form; st_cached: symmetric InfoNCE (hard labels)",
        "rounds": {"warmup": args.warmup, "timed": args.rounds},
        "sizes": rows,
        "cached_peak_growth": rounded(growth),
        "cached_rise_growth": rounded(
            largest["cached"]["rise_mib"] / max(smallest["cached"]["rise_mib"], 1e-9)
        ),
        "cached_over_uncached_seconds": time_ratios,
        "cached_over_uncached_cpu_seconds": cpu_ratios,
        "targets": {"cached_peak_growth": TARGET_PEAK_GROWTH, "cached_over_uncached_seconds": 1.5},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    result["targets_met"] = {
        "cached_peak_growth": growth <= TARGET_PEAK_GROWTH,
        "cached_over_uncached_seconds": all(r <= TARGET_CACHED_OVER_UNCACHED for r in time_ratios.values()),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
