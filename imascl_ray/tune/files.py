"""The sweep's state files, written so that a kill mid-write never leaves a half-written one.

``sweep.json`` (what ``--resume`` needs) and each trial's ``trial-result.json`` (a finished trial's
closing report, reused on resume) are read back by a later process; a file cut short by a kill would
make that process fail or, worse, trust a wrong value. Each is written to a temporary file in the same
folder (so the rename stays on one file system) and moved over the old one with ``os.replace``, which is
atomic: readers see the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomically(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path``, replacing the old file only once the new one is whole."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, before the rename)
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path
