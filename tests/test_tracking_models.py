"""The model in MLflow, on real stores: the sentence-transformers flavour loads back to the folder's
embeddings (directly and as pyfunc), artifacts stay under the output folder with one copy of the
weights, the corpus is the run's dataset, and registered versions load by name, over sqlite and over an
``http://`` tracking server on 127.0.0.1."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer
from test_tune_sweep import mlflow_server  # noqa: F401 (the server fixture, reused)

from imascl_ray.data import write_corpus
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tracking.models import (
    ARTIFACTS_FOLDER,
    INPUT_EXAMPLE,
    artifact_location,
    experiment_id,
    log_sentence_transformer,
    log_training_corpus,
    logged_model_of,
    register_model,
    runs_view_url,
)

TEXTS = ["open the file", "ouvrir le fichier", "the red cat"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    encoder = SentenceEncoder.from_pretrained(str(build_tiny_model(folder / "tiny")), prefix="query: ")
    return encoder.save(folder / "st")


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder of its own, to see that nothing lands in ./mlruns of the current folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _expected(folder) -> np.ndarray:
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(TEXTS)


def _assert_loads_back(uri: str, model_uri: str, expected: np.ndarray) -> None:
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.sentence_transformers.load_model(model_uri)
        np.testing.assert_allclose(loaded.encode(TEXTS), expected, atol=1e-5)
        predicted = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(TEXTS))
        np.testing.assert_allclose(predicted, expected, atol=1e-5)
    finally:
        mlflow.set_tracking_uri(None)


def test_sqlite_store_keeps_one_copy_under_the_output_folder_that_loads_back(
    tmp_path, model_folder, elsewhere
):
    output = tmp_path / "out"
    uri = f"sqlite:///{output / 'mlflow.db'}"
    output.mkdir()
    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(uri, "exp", output)
    assert experiment_id(uri, "exp", output) == experiment  # found, not made twice
    assert client.get_experiment(experiment).artifact_location.endswith(f"out/{ARTIFACTS_FOLDER}")
    run_id = client.create_run(experiment, run_name="r").info.run_id

    corpus = write_corpus(synthetic_parallel_corpus(30), tmp_path / "train.parquet")
    log_training_corpus(uri, run_id, corpus, "synthetic en-fr (train)")
    [entry] = client.get_run(run_id).inputs.dataset_inputs
    assert entry.dataset.name == "synthetic en-fr (train)"
    assert {(tag.key, tag.value) for tag in entry.tags} == {("mlflow.data.context", "training")}

    logged = log_sentence_transformer(uri, run_id, model_folder)
    assert logged_model_of(uri, run_id) == logged
    expected = _expected(model_folder)
    for model_uri in (logged.model_uri, f"runs:/{run_id}/model"):
        _assert_loads_back(uri, model_uri, expected)
    mlmodel = mlflow.models.Model.load(output / ARTIFACTS_FOLDER / "models" / logged.model_id / "artifacts")
    assert mlmodel.signature.inputs.to_dict() == [{"type": "string", "required": True}]
    assert mlmodel.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32)
    weights = list((output / ARTIFACTS_FOLDER).rglob("*.safetensors"))
    assert len(weights) == 1  # the flavour's copy only: no plain artifact copy beside it
    assert list(elsewhere.iterdir()) == []  # no ./mlruns, no mlflow.db where the command ran


def test_registered_versions_carry_tags_and_description_and_load_by_name(tmp_path, model_folder, elsewhere):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(uri, "exp", tmp_path)
    first = client.create_run(experiment).info.run_id
    log_sentence_transformer(uri, first, model_folder)
    v1 = register_model(uri, "encoder", run_id=first, tags={"imascl.trial_id": "t1"}, description="val 0.5")
    second = client.create_run(experiment).info.run_id  # no logged model yet: registering logs one
    v2 = register_model(uri, "encoder", run_id=second, model_dir=model_folder, tags={"val/mean/acc": "0.7"})
    assert (str(v1.version), str(v2.version)) == ("1", "2")
    stored = client.get_model_version("encoder", "1")
    assert stored.tags["imascl.trial_id"] == "t1" and stored.description == "val 0.5"
    assert stored.run_id == first and client.get_model_version("encoder", "2").run_id == second
    _assert_loads_back(uri, "models:/encoder/2", _expected(model_folder))
    with pytest.raises(Exception, match="no logged model"):
        register_model(uri, "encoder", run_id=client.create_run(experiment).info.run_id)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_logging_and_registering_over_http(mlflow_server, model_folder, elsewhere):  # noqa: F811
    assert artifact_location(mlflow_server, "/somewhere") is None  # the server decides
    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = client.create_run(experiment_id(mlflow_server, "http-models")).info.run_id
    logged = log_sentence_transformer(mlflow_server, run_id, model_folder)
    version = register_model(mlflow_server, "http-encoder", run_id=run_id, tags={"imascl.sweep": "s"})
    assert client.get_model_version("http-encoder", version.version).tags["imascl.sweep"] == "s"
    expected = _expected(model_folder)
    _assert_loads_back(mlflow_server, logged.model_uri, expected)
    _assert_loads_back(mlflow_server, f"models:/http-encoder/{version.version}", expected)
    assert list(elsewhere.iterdir()) == []


def test_ui_link_opens_the_training_runs_and_input_example_is_multilingual():
    assert runs_view_url("7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert runs_view_url("7", "http://h:1/") == "http://h:1/#/experiments/7/runs"
    assert len(INPUT_EXAMPLE) >= 2


def test_log_model_off_keeps_the_card_and_logs_no_model_unless_a_version_is_asked_for(
    tmp_path, model_folder, elsewhere
):
    import shutil

    from imascl_ray.config import load_config
    from imascl_ray.tracking import TrackedRun
    from imascl_ray.tracking.publish import publish_run_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = experiment_id(uri, "log-model", tmp_path)

    def publish(*overrides: str, register: bool = True) -> dict:
        folder = shutil.copytree(model_folder, tmp_path / f"model-{len(list(tmp_path.iterdir()))}")
        run_id = client.create_run(experiment).info.run_id
        config = load_config(None, [f"tracking.output_dir={tmp_path}", *overrides])
        return publish_run_model(
            config,
            folder,
            TrackedRun(uri, run_id),
            run_name="r",
            evaluation=None,
            eval_metrics={},
            summary=None,
            best_score=0.5,
            register=register,
        ) | {"run_id": run_id}

    off = publish("tracking.log_model=false")
    assert off["card"].is_file() and off["model_uri"] is None and off["registered"] is None
    assert logged_model_of(uri, off["run_id"]) is None
    # a registered version needs a logged model: register_as logs it even with log_model off
    wanted = publish("tracking.log_model=false", "tracking.register_as=imascl-off")
    assert wanted["model_uri"] and wanted["registered"] == "imascl-off/1"
    # a sweep's trial (register=False) leaves registering to the sweep: nothing logged
    trial = publish("tracking.log_model=false", "tracking.register_as=imascl-off", register=False)
    assert trial["model_uri"] is None and logged_model_of(uri, trial["run_id"]) is None
    assert publish()["model_uri"]  # the default logs it
