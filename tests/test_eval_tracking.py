"""MLflow logging of flat evaluation metrics, into a real sqlite-backed store."""

from __future__ import annotations

import pytest

from imascl_ray.errors import InputError
from imascl_ray.eval.tracking import log_metrics


@pytest.fixture()
def tracking_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_metrics_go_to_a_new_run_and_to_an_existing_one(tracking_uri):
    from mlflow.tracking import MlflowClient

    run_id = log_metrics(
        {"tatoeba/fra-eng/acc": 0.95, "sts17/ko-ko/spearman": float("nan")},
        experiment="eval-test",
        run_name="m",
        tracking_uri=tracking_uri,
        tags={"imascl.eval.suite": "paper"},
    )
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    assert run.data.metrics == {"tatoeba/fra-eng/acc": 0.95}  # NaN is not logged
    assert run.data.tags["imascl.eval.suite"] == "paper"
    assert run.info.status == "FINISHED"

    log_metrics({"local/en-fr/acc": 0.5}, run_id=run_id, tracking_uri=tracking_uri)
    assert client.get_run(run_id).data.metrics == {"tatoeba/fra-eng/acc": 0.95, "local/en-fr/acc": 0.5}
    assert client.get_experiment_by_name("eval-test").experiment_id == run.info.experiment_id


def test_unknown_run_or_no_destination_is_an_input_error(tracking_uri):
    with pytest.raises(InputError, match="not found"):
        log_metrics({"a": 1.0}, run_id="0" * 32, tracking_uri=tracking_uri)
    with pytest.raises(InputError):
        log_metrics({"a": 1.0}, tracking_uri=tracking_uri)
