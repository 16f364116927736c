"""Helpers shared by the benchmarks: interleaved timing, medians, the machine's description, the JSON line.

Speed on a shared machine is noisy, so every benchmark measures its variants *interleaved* after a
warm-up (``a, b, c, a, b, c, ...``) and reports medians: whatever else runs on the machine slows every
variant alike, and the ratios between them stay fair within one run. Each ratio is reported as the
min / median / max over rounds of the two variants' times in the same round (:func:`ratio_summary`), and
the load average before and after the timing (:func:`load_average`, :func:`stability`) says how quiet
the machine was: the figures of two runs agree only as well as the machine held still.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # ``python benchmarks/x.py`` from the repo root imports the project
    sys.path.insert(0, str(REPO_ROOT))

from imascl_ray.testing import set_test_environment  # noqa: E402  (after the path); the tests' settings

__all__ = [
    "add_work_dir",
    "cores",
    "emit",
    "fill_defaults",
    "interleaved",
    "load_average",
    "log",
    "machine",
    "median",
    "ratio_summary",
    "rounded",
    "set_test_environment",
    "small_run_overrides",
    "stability",
]

WORK_DIR = Path.home() / ".cache" / "imascl-ray" / "benchmarks"
"""Where the benchmarks keep what later runs reuse (prepared data, corpus and teacher caches)."""


def small_run_overrides(smoke: bool, work: Path) -> list[str]:
    """The model and data of the Ray benchmarks' short soft-label runs (scaling, train_overhead):
    ``--smoke``, a tiny random model on a synthetic corpus written under ``work``; else the offline
    multilingual-e5-small (word embeddings frozen) on 300 gettext pairs per language pair."""
    from imascl_ray.data import write_corpus

    if smoke:
        from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

        model = build_tiny_model(work / "tiny-model")
        corpus = write_corpus(synthetic_parallel_corpus(300), work / "tiny-corpus.parquet")
        data = [f"data.corpus={corpus}", "data.languages=[en,fr]", "data.pair_set=en-fr"]
        data += ["data.max_pairs_per_language_pair=200", "model.max_length=32", "teacher.max_length=32"]
    else:
        model = "offline:multilingual-e5-small"
        data = ["data.corpus=gettext", "data.languages=[en,fr,ja,ko,ru]", "data.pair_set=en-xx"]
        data += ["data.max_pairs_per_language_pair=300", "model.max_length=64", "teacher.max_length=64"]
    return [
        f"model.name={model}",
        "model.freeze_embeddings=true",
        *data,
        "data.validation_pairs=20",
        "loss.name=soft",
        "loss.labels=priority",
        "loss.teacher_tau=0.05",
    ]


def add_work_dir(parser: Any, what: str = "prepared data and teacher cache") -> None:
    """The ``--work-dir`` option every benchmark has (default :data:`WORK_DIR`)."""
    parser.add_argument("--work-dir", default=str(WORK_DIR), help=f"{what} (reused by later runs)")


def fill_defaults(args: Any, defaults: Mapping[str, Any]) -> Any:
    """Set each option the user left out (``None``) to the mode's default; returns ``args``."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def machine() -> dict[str, Any]:
    """Where and when the figures were taken: date, CPU count, memory, load, library versions."""
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> dict[str, float]:
    """``os.getloadavg()``: runnable processes over the last 1, 5 and 15 minutes."""
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def ratio_summary(
    times: Mapping[str, Sequence[float]], fast: str, slow: str, every: int = 1
) -> dict[str, float | int] | None:
    """Min / median / max over rounds of ``time(slow) / time(fast)`` (how many times faster ``fast`` is).

    Only rounds where both ran count; ``slow`` may have run every ``every``-th round only (then ``fast``'s
    rounds are taken at the same stride). None when either variant did not run.
    """
    if not times.get(fast) or not times.get(slow):
        return None
    fast_times = list(times[fast])[::every] if len(times[slow]) < len(times[fast]) else list(times[fast])
    count = min(len(fast_times), len(times[slow]))
    ratios = [s / f for f, s in zip(fast_times[:count], list(times[slow])[:count], strict=True)]
    return {
        "min": rounded(min(ratios)),
        "median": rounded(median(ratios)),
        "max": rounded(max(ratios)),
        "rounds": count,
    }


def stability(before: Mapping[str, float], after: Mapping[str, float], threads: int) -> dict[str, Any]:
    """Whether the machine was quiet while the benchmark timed, and if not, why its figures may move.

    Quiet: the 1-minute load average stayed below half a core before the timing started (the benchmark
    itself then adds about its thread count by the end). Otherwise other processes shared the cores
    and two runs' ratios can differ by more than 0.1: the note says so with the figures.
    """
    cpus = cores()
    quiet = before["1m"] < 0.5
    if quiet:
        note = f"quiet: load average {before['1m']} before the timing on {cpus} CPUs"
    else:
        note = (
            f"not quiet: load average {before['1m']} (1 min) before the timing and {after['1m']} after, "
            f"on {cpus} CPUs with {threads} torch threads here: other processes shared the cores, so the "
            "rounds' ratios spread (see their min and max) and a second run may differ by more than 0.1"
        )
    loads = {"load_before": dict(before), "load_after": dict(after)}
    return {"quiet": quiet, "cpus": cpus, **loads, "note": note}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def interleaved(
    variants: Mapping[str, Callable[[int], Any]],
    *,
    warmup: int,
    rounds: int,
    repeats: Mapping[str, int] | None = None,
    budget_s: float | None = None,
    min_rounds: int = 1,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each variant's call ``fn(i)`` (``i`` the round) interleaved; returns seconds per variant.

    ``warmup`` untimed rounds first (first calls allocate, JIT, fill caches), then ``rounds`` timed
    rounds of every variant in turn. The order rotates by one each round, so that no variant always
    follows the same one: a variant that frees gigabytes (the authors' 512-token step) would otherwise
    always hand the next one a process that must fault its memory back in. ``repeats[name]`` lets a
    slow variant run only every k-th round (still interleaved with the others). ``budget_s``: no new
    round starts once this many seconds have passed since the call, warm-up included (at least
    ``min_rounds`` timed rounds always run). ``clock``: what a call's duration is read from
    (``time.process_time`` for the CPU time the process spent, which other processes' load disturbs far
    less than wall time).
    """
    repeats = dict(repeats or {})
    started = time.perf_counter()
    for i in range(warmup):
        for name, fn in variants.items():
            if i % repeats.get(name, 1) == 0:
                fn(i)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        ran = []
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if r % repeats.get(name, 1) != 0:
                continue
            fn = variants[name]
            t0 = clock()
            fn(warmup + r)
            times[name].append(clock() - t0)
            ran.append(name)
        if log:
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in ran))
        over_budget = budget_s is not None and time.perf_counter() - started > budget_s
        if over_budget and r + 1 >= min_rounds:
            break
    return times


def log(message: str) -> None:
    """Progress on stderr, so that stdout's last line stays the JSON result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: Mapping[str, Any]) -> None:
    """Print the result as one JSON object on the last line of stdout."""
    print(json.dumps(result, sort_keys=False, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def rounded(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}") if value == value else value
