"""The quickstart's plumbing on a tiny model and a synthetic corpus (the real run is the README's command)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer

from imascl_ray.data import write_corpus
from imascl_ray.model_card import CARD_FILE
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tracking.models import ARTIFACTS_FOLDER
from imascl_ray.train.quickstart import FIGURE_ARTIFACT, comparison_table, run_quickstart

pytestmark = pytest.mark.slow


def test_comparison_table_shows_each_pair_and_the_mean():
    before = {"en-fr": {"accuracy": 0.5}, "en-ja": {"accuracy": 0.7}}
    after = {"en-fr": {"accuracy": 0.75}, "en-ja": {"accuracy": 0.7}}
    table = comparison_table(before, after)
    assert "| en-fr | 0.500 | 0.750 | +25.0 pts |" in table
    assert "| **mean** | 0.600 | 0.725 | +12.5 pts |" in table


def test_quickstart_writes_model_results_and_mlflow_metrics(ray_cluster, tmp_path, capsys, monkeypatch):
    model = build_tiny_model(tmp_path / "tiny")
    corpus = write_corpus(synthetic_parallel_corpus(600), tmp_path / "corpus.parquet")
    cwd = tmp_path / "cwd"  # where the command runs: nothing may land here (no ./mlruns, no mlflow.db)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    results = run_quickstart(
        tmp_path / "qs",
        [
            "tracking.register_as=quickstart-encoder",
            f"model.name={model}",
            f"data.corpus={corpus}",
            "data.languages=[en,fr]",
            "data.pair_set=en-fr",
            "data.validation_pairs=50",
            "data.test_pairs=100",
            "model.freeze_embeddings=false",
            "loss.name=infonce",  # the tiny model's random teacher gives uninformative soft labels
            "optim.lr=1e-3",
            "schedule.max_steps=30",
            "schedule.eval_every=15",
        ],
    )
    assert (tmp_path / "qs" / "model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert saved["trained"]["en-fr"]["accuracy"] > saved["pretrained"]["en-fr"]["accuracy"]
    output = capsys.readouterr().out
    assert "| en-fr |" in output and "ui --backend-store-uri sqlite:///" in output
    uri, run_id = results["mlflow_uri"], results["mlflow_run_id"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert {"pretrained/en-fr/acc", "local/en-fr/acc", "val/mean/acc"} <= set(run.data.metrics)
    # The monolingual structure the trained model kept against the pretrained one: logged and printed.
    assert run.data.metrics["local/structure/mean"] == pytest.approx(saved["monolingual_structure"]["mean"])
    assert "Monolingual structure kept" in output
    assert f"#/experiments/{run.info.experiment_id}/runs" in output  # the UI link opens the runs list

    # The model card names the run's real loss, pairs and scores.
    card = (tmp_path / "qs" / "model" / CARD_FILE).read_text(encoding="utf-8")
    trained = saved["trained"]["en-fr"]
    assert "`infonce`" in card and "`en-fr`" in card and "**Steps**: 30" in card
    assert f"| en-fr | {trained['accuracy']:.3f} | {trained['accuracy_src_to_tgt']:.3f} |" in card

    # The MLflow sentence-transformers model gives the folder's embeddings, also as pyfunc.
    texts = ["the cat", "le chat"]
    expected = SentenceTransformer(str(tmp_path / "qs" / "model"), device="cpu").encode(texts)
    mlflow.set_tracking_uri(uri)
    try:
        predicted = mlflow.pyfunc.load_model(results["mlflow_model_uri"]).predict(texts)
        registered = mlflow.sentence_transformers.load_model("models:/quickstart-encoder/1").encode(texts)
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(np.asarray(predicted), expected, atol=1e-5)
    np.testing.assert_allclose(registered, expected, atol=1e-5)
    version = client.get_model_version("quickstart-encoder", "1")
    assert version.run_id == run_id and float(version.tags["val/mean/acc"]) == pytest.approx(
        saved["best_validation_accuracy"], abs=1e-4
    )

    # The figure is in the run; the corpus is its dataset; the artifacts, one copy of the weights among
    # them, are in the output folder, and nothing is outside it.
    assert FIGURE_ARTIFACT in [a.path for a in client.list_artifacts(run_id, "figures")]
    assert Path(saved["figure"]).read_bytes().startswith(b"\x89PNG")
    assert run.inputs.dataset_inputs[0].dataset.name.endswith("en-fr (train)")
    assert len(list((tmp_path / "qs" / ARTIFACTS_FOLDER).rglob("model.safetensors"))) == 1
    assert list(cwd.iterdir()) == []
