"""Tracking-URI credentials: never shown or stored, moved into MLflow's variables, handed to the workers."""

from __future__ import annotations

import os

import pytest
from mlflow.tracking import MlflowClient

from imascl_ray.config import load_config
from imascl_ray.tracking import start_run, store_uri
from imascl_ray.tracking.credentials import (
    adopt_credentials,
    redact_text,
    redact_uri,
    split_credentials,
    without_credentials,
    worker_environment,
)

SECRET_URI = "https://alice:s3cr%40t@mlflow.example.com:5000/prefix"


def test_redaction_hides_user_and_password_wherever_a_uri_appears():
    assert redact_uri(SECRET_URI) == "https://***@mlflow.example.com:5000/prefix"
    assert redact_uri("https://tokenonly@host") == "https://***@host"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_uri("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert redact_uri(None) is None
    line = f"MLflow run abc in {SECRET_URI}; fallback 'http://bob:pw@other/'"
    assert (
        redact_text(line)
        == "MLflow run abc in https://***@mlflow.example.com:5000/prefix; fallback 'http://***@other/'"
    )
    assert "s3cr" not in redact_text(f"tracking.mlflow_uri={SECRET_URI}")


def test_credentials_move_into_mlflows_variables_and_the_uri_loses_them():
    assert split_credentials(SECRET_URI) == (
        "https://mlflow.example.com:5000/prefix",
        {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cr@t"},
    )
    environ = {"MLFLOW_TRACKING_USERNAME": "old"}
    assert adopt_credentials(SECRET_URI, environ) == "https://mlflow.example.com:5000/prefix"
    assert environ == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cr@t"}
    # A redacted URI read back (from sweep.json) keeps the environment's credentials.
    assert adopt_credentials("https://***@mlflow.example.com", environ) == "https://mlflow.example.com"
    assert environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert split_credentials("sqlite:////a@b/mlflow.db") == ("sqlite:////a@b/mlflow.db", {})


def test_a_config_loses_its_uri_credentials_to_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    config = load_config(None, [f"tracking.mlflow_uri={SECRET_URI}", "optim.lr=0.01"])
    clean = without_credentials(config)
    assert clean.tracking.mlflow_uri == "https://mlflow.example.com:5000/prefix"
    assert clean.optim.lr == 0.01 and config.tracking.mlflow_uri == SECRET_URI  # a copy; the rest kept
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cr@t"
    plain = load_config(None, ["tracking.mlflow_uri=http://127.0.0.1:5000"])
    assert without_credentials(plain) is plain


def test_worker_environment_is_mlflows_credentials_and_retry_settings_only():
    environ = {
        "MLFLOW_TRACKING_TOKEN": "t",
        "MLFLOW_TRACKING_PASSWORD": "p",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "AWS_SECRET_ACCESS_KEY": "not ours to forward",
        "HOME": "/home/x",
    }
    assert worker_environment(environ) == {
        "MLFLOW_TRACKING_TOKEN": "t",
        "MLFLOW_TRACKING_PASSWORD": "p",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    }


def test_a_run_started_with_a_credentialed_uri_stores_no_credential(tmp_path, monkeypatch):
    """The params (the flattened config) of a real MLflow run hold the URI without its secret."""
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    config = load_config(None, [f"tracking.output_dir={tmp_path}", f"tracking.mlflow_uri={SECRET_URI}"])
    assert store_uri(config) == "https://mlflow.example.com:5000/prefix"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr("imascl_ray.tracking.runs.store_uri", lambda config: store)
    run = start_run(config, "secret-test", tags={"a": "b"})
    run = MlflowClient(tracking_uri=store).get_run(run.run_id)
    assert run.data.params["tracking.mlflow_uri"] == "https://***@mlflow.example.com:5000/prefix"
    stored = " ".join([*run.data.params.values(), *run.data.tags.values()])
    assert "s3cr" not in stored and "alice" not in stored


@pytest.mark.slow
def test_a_local_cluster_hands_its_workers_the_mlflow_credentials(monkeypatch):
    import ray

    from imascl_ray.train.session import ray_session

    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
    config = load_config(None, [f"tracking.mlflow_uri={SECRET_URI}", "scaling.num_workers=1"])

    @ray.remote(num_cpus=1)
    def seen() -> dict[str, str | None]:
        keys = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        return {key: os.environ.get(key) for key in keys}

    with ray_session(None, config, num_cpus=1):
        view = ray.get(seen.remote())
    assert view == {
        "MLFLOW_TRACKING_TOKEN": "tok-123",
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "s3cr@t",
    }
