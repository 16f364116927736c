"""Which run a name means: fresh names that cannot collide, and no silent resume of an earlier run.

Ray Train resumes a run whose ``RunConfig(name)`` and storage already hold a checkpoint list ("A run
snapshot was found"): a second ``imascl-ray train`` under the same ``tracking.run_name`` would quietly
restore the first run's weights, optimiser and schedule, or train no step at all and export the old
model under the new run's params. So a run that is not meant to resume checks first
(:func:`check_new_run`) and stops with a message saying how to continue the old run or start afresh.
A run that is resumed (``imascl-ray train --resume``, or a Tune trial that Tune restarts) logs into its
earlier MLflow run, whose id the run folder keeps (:func:`remember_mlflow_run`).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from imascl_ray.errors import InputError

#: Ray Train's checkpoint list of a run, in ``<storage>/<run name>/`` (its presence makes Ray resume).
RAY_RUN_SNAPSHOT = "checkpoint_manager_snapshot.json"
#: The run folder's record of its MLflow run (what a resumed run logs into).
MLFLOW_RUN_FILE = "mlflow-run.json"


def unique_suffix() -> str:
    """A short random suffix for default names: two runs started in the same second still differ."""
    return secrets.token_hex(3)


def ray_snapshot(storage: str, run_name: str) -> str | None:
    """Where Ray keeps run ``run_name``'s checkpoint list under ``storage`` (a folder or a URI such as
    ``s3://bucket/prefix``), if there is one; else None."""
    import pyarrow.fs

    if "://" in storage:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
        path = f"{root.rstrip('/')}/{run_name}/{RAY_RUN_SNAPSHOT}"
        found = filesystem.get_file_info(path).type == pyarrow.fs.FileType.File
        return f"{storage.rstrip('/')}/{run_name}/{RAY_RUN_SNAPSHOT}" if found else None
    path = Path(storage).resolve() / run_name / RAY_RUN_SNAPSHOT
    return str(path) if path.is_file() else None


def check_new_run(run_name: str, storage: str, run_dir: Path) -> None:
    """Raise :class:`InputError` if ``run_name`` already has checkpoints (or a run folder that got as far
    as starting its MLflow run): training it again would resume that run, not start a new one."""
    found = ray_snapshot(storage, run_name)
    if found is None and (run_dir / MLFLOW_RUN_FILE).is_file():
        found = str(run_dir)
    if found is None:
        return
    raise InputError(
        f"run '{run_name}' exists already ({found}): continue it with `imascl-ray train ... "
        f"tracking.run_name={run_name} --resume`, or start afresh under another tracking.run_name "
        "(or none: every default name is new)"
    )


def remember_mlflow_run(run_dir: Path, run_id: str) -> None:
    """Write the run's MLflow run id into its folder (no URI: it may carry credentials)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MLFLOW_RUN_FILE).write_text(json.dumps({"run_id": run_id}) + "\n")


def remembered_mlflow_run(run_dir: Path) -> str | None:
    """The MLflow run id an earlier start of this run wrote, if any."""
    path = run_dir / MLFLOW_RUN_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id")
