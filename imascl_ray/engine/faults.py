"""Fault injection for the fault-tolerance tests: a worker kills itself once, at a step it is told.

Not a config key (nothing a user sets in a recipe): the tests set ``IMASCL_FAULT_AT_STEP`` (the 0-based
global step about to run) and optionally ``IMASCL_FAULT_RANK`` (default 1) in the environment of the
process that starts the Ray cluster, whose workers inherit it. A marker file in the run's folder makes it
fire once per run, so the restarted worker group gets past the step. ``IMASCL_FAULT_KIND=input-error``
raises an :class:`~imascl_ray.errors.InputError` instead (what a retry cannot cure: it fires on every
attempt, one line added to the marker each time).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

FAULT_AT_STEP = "IMASCL_FAULT_AT_STEP"
FAULT_RANK = "IMASCL_FAULT_RANK"
FAULT_KIND = "IMASCL_FAULT_KIND"


def marker_name(global_step: int) -> str:
    """The file a fired fault leaves in the run's folder."""
    return f"failed-at-step-{global_step}"


def maybe_fail(global_step: int, rank: int, marker_dir: Path) -> None:
    """Kill this process if the environment asks for a fault at ``global_step`` on ``rank``, once."""
    at_step = os.environ.get(FAULT_AT_STEP)
    if at_step is None or int(at_step) != global_step or int(os.environ.get(FAULT_RANK, "1")) != rank:
        return
    marker = Path(marker_dir) / marker_name(global_step)
    if os.environ.get(FAULT_KIND) == "input-error":
        from imascl_ray.errors import InputError

        with open(marker, "a") as record:
            record.write(f"rank {rank} raised an InputError at step {global_step}\n")
        raise InputError(f"{FAULT_KIND}=input-error: rank {rank} at step {global_step}")
    if marker.exists():
        return
    marker.write_text(f"rank {rank} killed itself at step {global_step}\n")
    logger.warning("%s: killing rank %d at step %d", FAULT_AT_STEP, rank, global_step)
    # Die mid-step, as a real crash would: Ray's controller registers reported checkpoints a poll later,
    # and a process that vanished within milliseconds of a report could make it restart from the one
    # before (correct, but not the failure this hook is for).
    time.sleep(2.0)
    os._exit(1)
