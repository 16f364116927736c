"""`ray job submit -- imascl-ray train ...` against a real head started by the test on 127.0.0.1.

The head gets its own temp dir and ports; the test stops it by the process ids of that head (never
`ray stop`, which would end every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def head_processes(temp_dir: str, gcs_port: int) -> list[psutil.Process]:
    """Every process of our head: its command line names the head's private temp dir or its GCS port."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if (temp_dir in cmdline or f":{gcs_port}" in cmdline) and process.pid != os.getpid():
            found.append(process)
    return found


def stop_head(temp_dir: str, gcs_port: int) -> None:
    """SIGTERM the head's processes and their children (Ray renames some, e.g. ``ray::DashboardAgent``, so
    only their parents' command lines name the head), then SIGKILL whatever outlives 20 s."""
    processes = head_processes(temp_dir, gcs_port)
    for process in list(processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            processes += process.children(recursive=True)
    processes = list({process.pid: process for process in processes}.values())
    for process in processes:
        with_suppressed(process.send_signal, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=20)
    for process in alive:  # gcs_server may ignore SIGTERM for a while
        with_suppressed(process.kill)


def with_suppressed(call, *args) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        call(*args)


@pytest.fixture
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dashboard_port = free_port(), free_port()
    # Every port of its own, so that other Ray instances on the machine (tests, users) cannot collide.
    own_ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--port",
            str(port),
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard_port),
            "--temp-dir",
            temp_dir,
            "--num-cpus",
            "4",
            "--disable-usage-stats",
            *own_ports,
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        yield f"http://127.0.0.1:{dashboard_port}", env, (temp_dir, port)
    finally:
        stop_head(temp_dir, port)


def test_a_training_job_submitted_to_a_local_head_succeeds(ray_head, tmp_path):
    address, env, head = ray_head
    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    corpus = write_corpus(synthetic_parallel_corpus(300), tmp_path / "corpus.parquet")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "smoke.yaml").write_text(
        f"model: {{name: '{model}', max_length: 32}}\n"
        "teacher: {max_length: 32}\n"
        f"data: {{corpus: '{corpus}', languages: [en, fr], pair_set: en-fr, validation_pairs: 50}}\n"
        "loss: {label: priority, tms: true}\n"
        "schedule: {global_batch_size: 16, max_steps: 4, eval_every: 2, log_every: 2}\n"
        "scaling: {num_workers: 2}\n"
        "eval: {suite: none}\n"
        f"tracking: {{output_dir: '{tmp_path / 'out'}', run_name: job-smoke}}\n"
    )
    started = time.monotonic()
    while True:  # the head's job agent comes up some seconds after `ray start` returns
        submitted = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(job_dir),
                "--runtime-env-json",  # as the README shows; the driver must not pass these again
                '{"env_vars": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}}',
                "--",
                "imascl-ray",
                "train",
                "smoke.yaml",
                "--address",
                "auto",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = submitted.stdout + submitted.stderr
        if "No available agent" not in output or time.monotonic() - started > 120:
            break
        time.sleep(3)
    assert submitted.returncode == 0, output[-3000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", output).group(1)
    assert JobSubmissionClient(address).get_job_status(job_id) == JobStatus.SUCCEEDED
    assert "best validation accuracy" in output, output[-3000:]
    assert (tmp_path / "out" / "runs" / "job-smoke" / "model" / "model.safetensors").is_file()
    assert time.monotonic() - started < 600
    assert head_processes(*head), "the head is still ours to stop"


def test_stopping_the_head_leaves_no_process_behind(ray_head):
    _, _, head = ray_head
    parents = head_processes(*head)
    family = {child.pid for parent in parents for child in parent.children(recursive=True)}
    assert family, "the head has child processes (agents, workers) to stop"
    stop_head(*head)
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
