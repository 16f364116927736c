"""Distributed training on a real local Ray cluster: 2 CPU workers, a tiny model, a learnable corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fault_runs import train_with_fault
from mlflow.tracking import MlflowClient

from imascl_ray.config import Config, dump_yaml, load_config
from imascl_ray.data import read_corpus, write_corpus
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.engine.faults import marker_name
from imascl_ray.eval.local_suite import evaluate_pair_groups
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.train.trainer import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.1),
        "corpus": write_corpus(synthetic_parallel_corpus(1000), folder / "corpus.parquet"),
    }


def make_config(assets: dict[str, Path], output: Path, *overrides: str, model: str = "model") -> Config:
    return load_config(
        None,
        [
            f"model.name={assets[model]}",
            f"data.corpus={assets['corpus']}",
            "data.languages=[en,fr]",
            "data.pair_set=en-fr",
            "data.validation_pairs=200",
            "data.test_pairs=100",
            "model.max_length=32",
            "teacher.max_length=32",
            "schedule.global_batch_size=16",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            f"tracking.output_dir={output}",
            *overrides,
        ],
    )


def metric_history(outcome, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(tracking_uri=outcome.mlflow_uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(outcome.mlflow_run_id, key))


def test_training_lowers_the_loss_and_raises_validation_accuracy(ray_cluster, assets, tmp_path):
    config = make_config(
        assets,
        tmp_path,
        "loss.name=soft",
        "loss.labels=priority",
        "loss.teacher_tau=0.01",
        "loss.tms=true",
        "optim.lr=1e-3",
        "schedule.max_steps=90",
        "schedule.log_every=10",
        "schedule.eval_every=30",
    )
    outcome = run_training(config, run_name="learn")
    validation = read_corpus(outcome.run_dir / "data" / "validation.parquet").groups()
    before = evaluate_pair_groups(SentenceEncoder.from_pretrained(assets["model"]), validation)["en-fr"]
    after = evaluate_pair_groups(SentenceEncoder.from_pretrained(outcome.model_dir), validation)["en-fr"]
    assert after["accuracy"] > before["accuracy"] + 0.3, (before, after)
    assert outcome.best_score == pytest.approx(
        after["accuracy"], abs=1e-6
    )  # the export is the best checkpoint
    losses = [value for _, value in metric_history(outcome, "train/loss")]
    assert losses[-1] < 0.7 * losses[0]  # soft labels put a floor (their entropy) under the loss
    # MLflow holds the run: flattened config as params, metrics, the held-out evaluation, the model.
    run = MlflowClient(tracking_uri=outcome.mlflow_uri).get_run(outcome.mlflow_run_id)
    assert run.data.params["loss.name"] == "soft" and run.data.params["loss.labels"] == "priority"
    assert run.data.params["optim.lr"] == "0.001"
    assert run.info.status == "FINISHED"
    logged = {"val/mean/acc", "train/lr", "train/cross", "train/mono", "labels/entropy", "pairs_per_s"}
    assert logged | {"local/en-fr/acc"} <= set(run.data.metrics)
    assert (outcome.model_dir / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "loss",
    [
        ("loss.name=infonce",),
        ("loss.name=hard_negatives", "loss.hard_negatives=2"),
        ("loss.name=mse",),  # the failing command on 2 workers: a shape error at step 1
        ("loss.name=soft", "loss.labels=average", "loss.local=true", "loss.teacher_tau=0.01"),
    ],
    ids=lambda overrides: overrides[0].removeprefix("loss.name="),
)
def test_every_loss_trains_on_two_workers(ray_cluster, assets, tmp_path, loss):
    """A short run of each loss: its loss falls and validation accuracy does not fall below the start."""
    config = make_config(
        assets,
        tmp_path,
        *loss,
        "loss.tms=false",
        # 5e-3, the smoke sweep's good rate: at 1e-3 (decaying to 0 over 20 steps) infonce,
        # hard_negatives and soft fell by only 4-5 %, too little to tell training from noise.
        "optim.lr=5e-3",
        "schedule.max_steps=20",
        "schedule.log_every=5",
        "schedule.eval_every=20",
        "eval.suite=none",
    )
    outcome = run_training(config, run_name="loss")
    losses = [value for _, value in metric_history(outcome, "train/loss")]
    # Seen: the last of 4 logged means at 0.13 (infonce) to 0.45 (mse) of the first.
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0], losses
    validation = read_corpus(outcome.run_dir / "data" / "validation.parquet").groups()
    before = evaluate_pair_groups(SentenceEncoder.from_pretrained(assets["model"]), validation)["en-fr"]
    assert outcome.best_score >= before["accuracy"], (outcome.best_score, before)


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_matches_an_uninterrupted_run(
    ray_cluster, assets, tmp_path
):
    common = (
        "loss.name=soft",
        "optim.lr=1e-3",
        "schedule.max_steps=6",
        "schedule.eval_every=2",
        "schedule.log_every=1",
        "eval.suite=none",
    )
    plain = run_training(make_config(assets, tmp_path / "plain", *common), run_name="plain")
    # Rank 1 kills its own process when about to run step index 3 (after 3 steps); the last checkpoint
    # is at step 2, so step 3 is redone, and nothing before it. The fault is asked for in the environment
    # of a `imascl-ray train` process (its own local cluster's workers inherit it), as a user would.
    recipe = tmp_path / "fault.yaml"
    dump_yaml(make_config(assets, tmp_path / "fault", *common, "tracking.run_name=fault"), recipe)
    process = train_with_fault(recipe, tmp_path, at_step=3, rank=1)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert (tmp_path / "fault" / "runs" / "fault" / marker_name(3)).is_file()
    run_id, uri = re.search(r"MLflow run (\S+) in (\S+)", process.stdout).groups()
    history = sorted(
        (m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, "train/loss")
    )
    expected = dict(metric_history(plain, "train/loss"))
    assert [step for step, _ in history] == [1, 2, 3, 3, 4, 5, 6]
    for step, value in history:
        assert value == pytest.approx(expected[step], rel=1e-6), step
