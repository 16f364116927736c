"""``imascl-ray train`` in its own process with a worker fault asked for, as the fault tests need it.

The fault hook (:mod:`imascl_ray.engine.faults`) reads the environment of the Ray workers, and the
workers of a local cluster inherit the environment of the process that starts the cluster: so the
run goes through a subprocess whose environment asks for the fault, as a user's shell would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imascl_ray.engine.faults import FAULT_AT_STEP, FAULT_RANK

ROOT = Path(__file__).resolve().parents[1]


def train_with_fault(recipe: Path, cwd: Path, *, at_step: int, rank: int) -> subprocess.CompletedProcess:
    """``imascl-ray train recipe`` in ``cwd``; rank ``rank`` kills itself before step index ``at_step``."""
    env = os.environ | {"PYTHONPATH": str(ROOT), FAULT_AT_STEP: str(at_step), FAULT_RANK: str(rank)}
    return subprocess.run(
        [sys.executable, "-m", "imascl_ray", "train", str(recipe)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
