"""A real ``mlflow server`` for tests: 127.0.0.1, a free port, a sqlite store, one worker, no job runner.

It can be stopped and started again on the same port with the same store (a server restarting under a
running training). It is stopped by its own process group, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ports import free_port


class MlflowServer:
    """``mlflow server`` in ``folder`` (store ``mlflow.db``, artifacts ``artifacts/``, log ``server.log``)."""

    def __init__(self, folder: Path, port: int | None = None, *extra_args: str) -> None:
        self.folder, self.port, self.extra_args = Path(folder), port or free_port(), extra_args
        self.folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start it and wait until ``/health`` answers."""
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            *self.extra_args,
        ]
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                start_new_session=True,  # its own process group: the server and its worker, stopped together
            )
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {self.log()[-2000:]}")
            time.sleep(0.3)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.read().strip() == b"OK"
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM its process group; SIGKILL after 20 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        self.process = None

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text() if path.is_file() else ""
