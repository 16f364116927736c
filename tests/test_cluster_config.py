"""cluster.yaml passes Ray's own cluster-config validation and keeps the dashboard and job API private."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml
from ports import free_port
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
BIN = Path(sys.executable).parent


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_ray_validates_the_cluster_config():
    config = prepare_config(load())
    validate_config(config)
    assert config["available_node_types"]["gpu-worker"]["resources"]["GPU"] == 1
    assert "GPU" not in config["available_node_types"][config["head_node_type"]]["resources"]


def test_the_dashboard_binds_to_localhost_and_nothing_opens_to_the_world():
    config = load()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text()
    # Given security groups stop Ray from creating its default one (which opens SSH to every address);
    # the file defines no ingress rule of its own, so no port (8265, 10001, 6379) is opened by it.
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"]
    assert "security_group" not in config["provider"]


def test_setup_installs_the_pinned_torch_first_then_the_project():
    commands = load()["setup_commands"]
    torch_line = next(i for i, c in enumerate(commands) if "torch==" in c)
    project_line = next(i for i, c in enumerate(commands) if "imascl-ray" in c)
    assert torch_line < project_line


def test_ray_starts_with_token_auth_on_every_node_and_the_token_stays_out_of_files_and_logs():
    config = load()
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    for commands in (head, workers):
        (start,) = [command for command in commands if "ray start" in command]
        assert "RAY_AUTH_MODE=token ray start" in start  # fails closed: no token, no Ray
    # The token: the one `ray up`'s machine holds, copied to every node; a hand-started head makes one.
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    generate = next(command for command in head if "get-auth-token" in command)
    assert head.index(generate) < next(i for i, command in enumerate(head) if "ray start" in command)
    assert generate.strip().endswith("> /dev/null")  # it prints the token otherwise
    assert "RAY_AUTH_TOKEN=" not in CLUSTER_YAML.read_text()


def test_the_tracking_server_is_private_authenticated_and_the_only_writer_of_its_store():
    config = load()
    head = config["head_start_ray_commands"]
    (server,) = [command for command in head if "mlflow server" in command]
    assert "--app-name basic-auth" in server
    # The head's private address (first of `hostname -I`): not 0.0.0.0, nor 127.0.0.1 (workers can't reach it)
    assert "ip=\"$(hostname -I | cut -d' ' -f1)\"" in server and '--host "$ip" ' in server
    assert '--allowed-hosts "$ip:5000"' in server  # requests addressed to it there only (DNS rebinding)
    assert "sqlite:////mnt/shared/" in server  # one server process owns the sqlite file on the shared disk
    (start,) = [command for command in head if "ray start" in command]
    assert 'MLFLOW_TRACKING_URI="http://$(hostname -I' in start  # the drivers' URI is the server's
    # Nothing tells a node to open sqlite on the shared disk itself, and no password is written here.
    everything = " ".join(config["setup_commands"] + config["worker_start_ray_commands"])
    assert "sqlite" not in everything
    assert not re.search(r"PASSWORD=[^$\"'\s]", CLUSTER_YAML.read_text().replace("PASSWORD=' +", ""))
    # Made with umask 077 (mode 600), never echoed.
    (make_secret,) = [c for c in config["head_setup_commands"] if "mlflow.env" in c]
    assert "umask 077" in make_secret and "> ~/.imascl/mlflow.env" in make_secret


@pytest.mark.slow
def test_the_heads_mlflow_commands_serve_only_clients_with_the_generated_password(tmp_path):
    """cluster.yaml's head_setup_commands and the MLflow lines of head_start_ray_commands, run here with a
    temp HOME, the shared disk in a temp folder and a free port: the server refuses a client without the
    password and serves one with it; the restart line stops it by its process id."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs mlflow[auth] (the test extra)")
    home, shared = tmp_path / "home", tmp_path / "shared"
    home.mkdir()
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING")}
    env |= {"HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    config = load()
    stop_line, server_line = [c for c in config["head_start_ray_commands"] if "mlflow.pid" in c]
    for command in config["head_setup_commands"] + [server_line]:
        command = command.replace("/mnt/shared", str(shared)).replace("5000", str(port))
        done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
    secrets = dict(line.split("=", 1) for line in (home / ".imascl" / "mlflow.env").read_text().split())
    assert oct((home / ".imascl" / "mlflow.env").stat().st_mode & 0o777) == "0o600"
    pid = int((home / ".imascl" / "mlflow.pid").read_text())
    host = subprocess.run(["bash", "-c", "hostname -I | cut -d' ' -f1"], capture_output=True, text=True)
    url = f"http://{host.stdout.strip()}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # answering (the auth app may guard /health too)
            except OSError:
                if time.monotonic() > deadline or not psutil.pid_exists(pid):
                    raise AssertionError((home / ".imascl" / "mlflow.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)
        assert refused.value.code == 401
        basic = base64.b64encode(
            f"{secrets['MLFLOW_TRACKING_USERNAME']}:{secrets['MLFLOW_TRACKING_PASSWORD']}".encode()
        ).decode()
        request = urllib.request.Request(search, headers={"Authorization": f"Basic {basic}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and "experiments" in json.loads(response.read())
        assert (shared / "imascl" / "mlflow" / "mlflow.db").is_file()  # the store on the shared disk
        assert not (shared / "imascl" / "mlflow" / "basic_auth.db").exists()  # users stay on the head
        done = subprocess.run(["bash", "-c", stop_line], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            for child in [*process.children(recursive=True), process]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
