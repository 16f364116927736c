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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from ports import free_ports
from ray.job_submission import JobStatus, JobSubmissionClient

from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tune import results

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

#: The ``ray start`` port flags a test head sets to free ports of its own, so that no other Ray on the
#: machine (tests, users) can collide with it (besides --port and --dashboard-port).
NODE_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "ray-client-server-port",
    "node-manager-port",
)


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
    only their parents' command lines name the head), then SIGKILL whatever outlives 5 s and wait for it
    (gcs_server ignores SIGTERM for a while: waiting 20 s for it cost 20 s at every head's end, issue 24)."""
    processes = head_processes(temp_dir, gcs_port)
    for process in list(processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            processes += process.children(recursive=True)
    processes = list({process.pid: process for process in processes}.values())
    for process in processes:
        with_suppressed(process.send_signal, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:  # gcs_server may ignore SIGTERM for a while
        with_suppressed(process.kill)
    psutil.wait_procs(alive, timeout=10)  # SIGKILL is not instant: a process still dying is not yet gone


def with_suppressed(call, *args) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        call(*args)


@contextlib.contextmanager
def started_head():
    """A Ray head of the test's own on 127.0.0.1: yields (job API address, env, (temp dir, GCS port))."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Every port of its own, so that other Ray instances on the machine (tests, users) cannot collide.
    names = (*NODE_PORT_FLAGS, "object-manager-port")
    port, dashboard_port, *others = free_ports(2 + len(names))
    own_ports = [f"--{name}={number}" for name, number in zip(names, others, strict=True)]
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
                # As the README shows. An MLflow setting too: the driver hands MLflow's settings to its
                # workers through a runtime env of its own, which must merge with the job's.
                "--runtime-env-json",
                '{"env_vars": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", '
                '"MLFLOW_HTTP_REQUEST_TIMEOUT": "90"}}',
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
        "loss: {name: soft, labels: priority, tms: true}\n"
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
    """The smoke sweep as a job: its trial's Train run on the head's cluster, the summary written."""
    address, env, _ = ray_head
    model = build_tiny_model(tmp_path / "tiny", dropout=0.1)
    corpus = synthetic_parallel_corpus(300, pair_names=("en-fr", "en-ru"))
    corpus = write_corpus(corpus, tmp_path / "corpus.parquet")
    job_dir = tmp_path / "job"
    shutil.copytree(ROOT / "tune_spaces", job_dir / "tune_spaces")  # what `--working-dir .` uploads
    output_dir = tmp_path / "out"
    # One trial: the smoke sweep's three (ASHA, pair sets) are tests/test_tune_sweep.py's; here the job.
    entrypoint = ["imascl-ray", "tune", "smoke", "--num-samples", "1", "--address", "auto"]
    entrypoint.append(f"model.name={model}")
    entrypoint += [f"data.corpus={corpus}", f"tracking.output_dir={output_dir}", "tracking.experiment=job"]
    _, output = submit(address, env, job_dir, *entrypoint)
    (sweep,) = (output_dir / "sweeps").glob("smoke-*")
    with open(sweep / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["status"] == results.FINISHED, rows
    assert (sweep / "best-config.yaml").is_file() and (sweep / "best-model" / "model.safetensors").is_file()
    assert f"sweep: {sweep}" in output, output[-3000:]
    state = json.loads((sweep / "sweep.json").read_text())
    parent = MlflowClient(tracking_uri=state["mlflow_uri"]).get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED"


def test_stopping_the_head_leaves_no_process_behind(ray_head):
    """The module's head, after the submissions above (the last test to use it)."""
    _, _, head = ray_head
    parents = head_processes(*head)
    family = {child.pid for parent in parents for child in parent.children(recursive=True)}
    assert family, "the head has child processes (agents, workers) to stop"
    stop_head(*head)
    assert not [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


# ---------------------------------------------------------------------------------------------------------
# cluster.yaml's own head commands, run here: Ray's token authentication is really on.


def cluster_commands(section: str) -> list[str]:
    import yaml

    return list(yaml.safe_load((ROOT / "cluster.yaml").read_text())[section])


def localised(command: str, *, shared: Path, ports: dict[str, int], extra: str = "") -> str:
    """A cluster.yaml command for this machine: the shared disk in a temp folder, private ports, no
    autoscaler config (there is no cluster launcher here); ``extra`` goes after ``ray start``'s flags."""
    command = command.replace("/mnt/shared", str(shared))
    for default, port in ports.items():
        command = re.sub(rf"(?<=[=:]){default}\b|(?<=--port ){default}\b", str(port), command)
    command = command.replace(" --autoscaling-config=~/ray_bootstrap_config.yaml", "")
    if "ray start" in command:
        command += f" {extra}"
    return command


def run_shell(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


def plain_environment(home: Path) -> dict[str, str]:
    """This process's environment without any Ray auth setting (the tests' own disable it), in ``home``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    return env | {"HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def submit_echo(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--", "echo", "job-ran"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cluster_head_commands_start_ray_with_token_auth_on(tmp_path):
    """cluster.yaml's head_setup_commands and head_start_ray_commands, with private ports, a temp dir
    and a temp HOME (the token lands there, not in ~/.ray): the job API refuses a submission without the
    token or with a wrong one, and accepts one with it. `ray stop` is left out (it would stop every Ray
    on the machine), and so is the MLflow server (its own test below)."""
    home, shared = tmp_path / "home", tmp_path / "shared"
    home.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths have a length limit
    names = NODE_PORT_FLAGS  # cluster.yaml sets --object-manager-port itself (8076, mapped below)
    port, dashboard_port, client_port, mlflow_port, *others = free_ports(4 + len(names))
    ports = {"6379": port, "8265": dashboard_port, "8076": client_port, "5000": mlflow_port}
    own_ports = " ".join(f"--{name}={number}" for name, number in zip(names, others, strict=True))
    extra = f"--temp-dir={temp_dir} --num-cpus=1 {own_ports}"
    env = plain_environment(home)
    commands = cluster_commands("head_setup_commands") + [
        command
        for command in cluster_commands("head_start_ray_commands")
        if command.strip() != "ray stop" and "mlflow server" not in command and "mlflow.pid" not in command
    ]
    assert any("ray start --head" in command for command in commands)
    outputs = []
    try:
        for command in commands:
            done = run_shell(localised(command, shared=shared, ports=ports, extra=extra), env, tmp_path)
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, (command, outputs[-1][-3000:])
        token = (home / ".ray" / "auth_token").read_text().strip()
        assert len(token) >= 32
        assert (
            not (Path.home() / ".ray" / "auth_token").exists()
            or token != (Path.home() / ".ray" / "auth_token").read_text().strip()
        )
        assert all(token not in output for output in outputs), "the token was printed"
        address = f"http://127.0.0.1:{dashboard_port}"

        stranger = tmp_path / "stranger"
        stranger.mkdir()
        deadline = time.monotonic() + 120
        while True:  # the job agent comes up some seconds after `ray start` returns
            refused = submit_echo(address, plain_environment(stranger))
            if "No available agent" not in refused.stdout + refused.stderr or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert refused.returncode != 0 and "job-ran" not in refused.stdout, refused.stdout + refused.stderr
        assert re.search(r"(?i)401|unauthori[sz]ed|authentication", refused.stdout + refused.stderr)
        wrong = submit_echo(
            address, plain_environment(stranger) | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32}
        )
        assert wrong.returncode != 0 and "job-ran" not in wrong.stdout, wrong.stdout + wrong.stderr

        accepted = submit_echo(address, env | {"RAY_AUTH_MODE": "token"})  # the token of ~/.ray/auth_token
        assert accepted.returncode == 0, accepted.stdout[-3000:] + accepted.stderr[-3000:]
        assert "job-ran" in accepted.stdout and "succeeded" in accepted.stdout
    finally:
        stop_head(temp_dir, port)
