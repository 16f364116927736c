"""`ray job submit -- imascl-ray train|tune ...` against a real head started by the test on 127.0.0.1.

The head gets its own temp dir and ports; the test stops it by the process ids of that head (never
`ray stop`, which would end every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tune import results

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


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


@contextlib.contextmanager
def started_head():
    """A Ray head of the test's own on 127.0.0.1: yields (job API address, env, (temp dir, GCS port))."""
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


@pytest.fixture(scope="module")
def ray_head():
    """One head for the submission tests (a head takes some seconds to start)."""
    with started_head() as head:
        yield head


@pytest.fixture
def own_ray_head():
    """A head that the test may stop itself."""
    with started_head() as head:
        yield head


def submit(address: str, env: dict[str, str], job_dir: Path, *entrypoint: str) -> tuple[str, str]:
    """``ray job submit`` as the README shows it; waits for the job and returns (job id, its output)."""
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
                *entrypoint,
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
    return job_id, output


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
        "tracking: {run_name: job-smoke}\n"
    )
    started = time.monotonic()
    # Overrides after the options, as the README shows.
    entrypoint = ["imascl-ray", "train", "smoke.yaml", "--address", "auto"]
    entrypoint.append(f"tracking.output_dir={tmp_path / 'out'}")
    _, output = submit(address, env, job_dir, *entrypoint)
    assert "best validation accuracy" in output, output[-3000:]
    assert (tmp_path / "out" / "runs" / "job-smoke" / "model" / "model.safetensors").is_file()
    assert time.monotonic() - started < 600
    assert head_processes(*head), "the head is still ours to stop"


def test_a_tune_sweep_submitted_to_a_local_head_succeeds(ray_head, tmp_path):
    """The smoke sweep as a job: every trial's Train run on the head's cluster, the summary written."""
    address, env, _ = ray_head
    model = build_tiny_model(tmp_path / "tiny", dropout=0.1)
    corpus = synthetic_parallel_corpus(300, pair_names=("en-fr", "en-ru"))
    corpus = write_corpus(corpus, tmp_path / "corpus.parquet")
    job_dir = tmp_path / "job"
    shutil.copytree(ROOT / "tune_spaces", job_dir / "tune_spaces")  # what `--working-dir .` uploads
    output_dir = tmp_path / "out"
    entrypoint = ["imascl-ray", "tune", "smoke", "--address", "auto", f"model.name={model}"]
    entrypoint += [f"data.corpus={corpus}", f"tracking.output_dir={output_dir}", "tracking.experiment=job"]
    _, output = submit(address, env, job_dir, *entrypoint)
    (sweep,) = (output_dir / "sweeps").glob("smoke-*")
    with open(sweep / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {row["status"] for row in rows} <= {results.FINISHED, results.STOPPED}, rows
    assert (sweep / "best-config.yaml").is_file() and (sweep / "best-model" / "model.safetensors").is_file()
    assert f"sweep: {sweep}" in output, output[-3000:]
    state = json.loads((sweep / "sweep.json").read_text())
    parent = MlflowClient(tracking_uri=state["mlflow_uri"]).get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"


def test_stopping_the_head_leaves_no_process_behind(own_ray_head):
    _, _, head = own_ray_head
    parents = head_processes(*head)
    family = {child.pid for parent in parents for child in parent.children(recursive=True)}
    assert family, "the head has child processes (agents, workers) to stop"
    stop_head(*head)
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
