"""cluster.yaml passes Ray's own cluster-config validation and keeps the dashboard and job API private."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


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
