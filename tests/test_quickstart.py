"""The quickstart's plumbing on a tiny model and a synthetic corpus (the real run is the README's command)."""

from __future__ import annotations

import json

import pytest
import ray
from mlflow.tracking import MlflowClient

from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.train.quickstart import comparison_table, run_quickstart

pytestmark = pytest.mark.slow


def test_comparison_table_shows_each_pair_and_the_mean():
    before = {"en-fr": {"accuracy": 0.5}, "en-ja": {"accuracy": 0.7}}
    after = {"en-fr": {"accuracy": 0.75}, "en-ja": {"accuracy": 0.7}}
    table = comparison_table(before, after)
    assert "| en-fr | 0.500 | 0.750 | +25.0 pts |" in table
    assert "| **mean** | 0.600 | 0.725 | +12.5 pts |" in table


def test_quickstart_writes_model_results_and_mlflow_metrics(tmp_path, capsys):
    model = build_tiny_model(tmp_path / "tiny")
    corpus = write_corpus(synthetic_parallel_corpus(600), tmp_path / "corpus.parquet")
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    try:
        results = run_quickstart(
            tmp_path / "qs",
            [
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
    finally:
        ray.shutdown()
    assert (tmp_path / "qs" / "model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert saved["trained"]["en-fr"]["accuracy"] > saved["pretrained"]["en-fr"]["accuracy"]
    output = capsys.readouterr().out
    assert "| en-fr |" in output and "ui --backend-store-uri sqlite:///" in output
    run = MlflowClient(tracking_uri=results["mlflow_uri"]).get_run(results["mlflow_run_id"])
    assert {"pretrained/en-fr/acc", "local/en-fr/acc", "val/mean/acc"} <= set(run.data.metrics)
