"""Shared test settings: the same environment as ``.ci/env.sh``, set before anything imports Ray."""

from __future__ import annotations

import os

TEST_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}
for key, value in TEST_ENVIRONMENT.items():
    os.environ.setdefault(key, value)
