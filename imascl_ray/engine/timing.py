"""An optional wall-clock timer of the training loop's phases, per step: where a step's time goes.

``benchmarks/train_overhead.py`` compares the bare loop with the same loop inside Ray Train; to see
what Ray adds it needs the step time *from inside the loop* (start-up excluded) and its parts: batch
assembly, the teacher lookup, the forward (tokenisation in it), the gather, the loss, backward, the
optimiser, ``report`` (``ray.train.report`` under Ray), checkpoint and validation.

Off by default, and then free: :func:`step_timer` hands the loop a :class:`NullTimer`, whose ``phase``
returns one shared no-op context (no clock is read, nothing is stored). On when the environment of the
process that starts the run sets ``IMASCL_STEP_TIMING=1`` (a local Ray cluster's workers inherit it,
as with :mod:`imascl_ray.engine.faults`); the loop then returns :meth:`StepTimer.summary` with its own
summary, which Ray Train hands back to the driver (``result.return_value``).

A phase named ``outer.part`` is timed inside phase ``outer`` (Ray's reporter splits ``report`` into
``report.mlflow_flush`` and ``report.ray``): a part, not one more phase to add to the step.

Phases are wall time (``time.perf_counter``). On CPU every operation is synchronous, so a phase's time
is its work; on a GPU, kernels run ahead of the host and a phase shows when the host waited.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

TIMING_ENV = "IMASCL_STEP_TIMING"
"""Set to ``1`` to time the loop's phases (any other value, or none: off)."""

_NOTHING = nullcontext()


class NullTimer:
    """The timer when timing is off: every call does nothing."""

    enabled = False

    def phase(self, name: str) -> AbstractContextManager[None]:
        return _NOTHING

    def start_step(self) -> None:
        pass

    def end_step(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


class StepTimer:
    """Wall time of each named phase of each step, and of each step as a whole.

    A step is one iteration of the loop: :meth:`start_step` ... :meth:`end_step`, the phases timed
    inside it with :meth:`phase` (a phase that runs twice in one step adds up). :meth:`summary` leaves
    out the first ``warmup`` steps (first calls allocate memory and fill caches) and, from each step's
    time, its validation (the same work with or without Ray, and only at some steps).
    """

    enabled = True

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.steps: list[dict[str, float]] = []
        self._current: dict[str, float] | None = None
        self._started = 0.0

    def start_step(self) -> None:
        self._current, self._started = {}, time.perf_counter()

    def end_step(self) -> None:
        if self._current is None:
            return
        self._current["step"] = time.perf_counter() - self._started
        self.steps.append(self._current)
        self._current = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._current is not None:
                self._current[name] = self._current.get(name, 0.0) + time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        """The steady steps' figures: ``step_s`` (each step's time less its validation, in order),
        its mean and median, and per phase the mean over the steady steps (``phases_mean_s``: a phase
        that runs every k-th step counts 1/k of its time) and how many of them ran it."""
        steady = self.steps[self.warmup :]
        step_s = [entry["step"] - entry.get("validate", 0.0) for entry in steady]
        names = sorted({name for entry in steady for name in entry} - {"step"})
        count = max(1, len(steady))
        return {
            "warmup_steps": min(self.warmup, len(self.steps)),
            "steps": len(steady),
            "step_s": step_s,
            "step_mean_s": sum(step_s) / count,
            "step_median_s": statistics.median(step_s) if step_s else float("nan"),
            "phases_mean_s": {name: sum(entry.get(name, 0.0) for entry in steady) / count for name in names},
            "phases_count": {name: sum(name in entry for entry in steady) for name in names},
        }


Timer = NullTimer | StepTimer


def step_timer(environ: dict[str, str] | None = None) -> Timer:
    """A :class:`StepTimer` if ``IMASCL_STEP_TIMING=1`` in ``environ`` (default ``os.environ``), else the
    free :class:`NullTimer`."""
    environ = os.environ if environ is None else environ
    return StepTimer() if environ.get(TIMING_ENV) == "1" else NullTimer()
