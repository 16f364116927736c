"""Helpers shared by the benchmarks: interleaved timing, medians, the machine's description, the JSON line.

Speed on a shared machine is noisy, so every benchmark measures its variants *interleaved* after a
warm-up (``a, b, c, a, b, c, ...``) and reports medians: whatever else runs on the machine slows every
variant alike, and the ratios between them stay fair within one run.
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
    "emit",
    "fill_defaults",
    "interleaved",
    "log",
    "machine",
    "median",
    "rounded",
    "set_test_environment",
]

WORK_DIR = Path.home() / ".cache" / "imascl-ray" / "benchmarks"
"""Where the benchmarks keep what later runs reuse (prepared data, corpus and teacher caches)."""


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


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def interleaved(
    variants: Mapping[str, Callable[[int], Any]],
    *,
    warmup: int,
    rounds: int,
    repeats: Mapping[str, int] | None = None,
    budget_s: float | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each variant's call ``fn(i)`` (``i`` the round) interleaved; returns seconds per variant.

    ``warmup`` untimed rounds first (first calls allocate, JIT, fill caches), then ``rounds`` timed
    rounds of every variant in turn. The order rotates by one each round, so that no variant always
    follows the same one: a variant that frees gigabytes (the authors' 512-token step) would otherwise
    always hand the next one a process that must fault its memory back in. ``repeats[name]`` lets a
    slow variant run only every k-th round (still interleaved with the others). ``budget_s``: no new
    round starts once this many seconds have passed since the call, warm-up included (at least one
    timed round always runs). ``clock``: what a call's duration is read from (``time.process_time`` for
    the CPU time the process spent, which other processes' load disturbs far less than wall time).
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
        if budget_s is not None and time.perf_counter() - started > budget_s:
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
