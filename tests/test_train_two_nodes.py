"""Workers on two Ray nodes (two raylets on one machine) gather by global rank, not local rank."""

from __future__ import annotations

import pytest
from ray_nodes import two_raylets

from imascl_ray.config import load_config
from imascl_ray.data import write_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.train.trainer import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_node_cluster():
    with two_raylets(cpus_per_node=1) as cluster:
        yield cluster


def test_one_worker_per_node_matches_a_single_worker(two_node_cluster, tmp_path):
    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    corpus = write_corpus(synthetic_parallel_corpus(400), tmp_path / "corpus.parquet")

    def run(name: str, *overrides: str):
        config = load_config(
            None,
            [
                f"model.name={model}",
                f"data.corpus={corpus}",
                "data.languages=[en,fr]",
                "data.pair_set=en-fr",
                "data.validation_pairs=50",
                "model.max_length=32",
                "teacher.max_length=32",
                "schedule.global_batch_size=16",
                "schedule.max_steps=1",
                "schedule.eval_every=1",
                "loss.name=soft",
                "loss.labels=priority",
                "loss.tms=true",
                "eval.suite=none",
                "scaling.cpus_per_worker=1",
                f"tracking.output_dir={tmp_path / name}",
                *overrides,
            ],
        )
        return run_training(config, run_name=name)

    spread = run("spread", "scaling.num_workers=2", "scaling.placement_strategy=STRICT_SPREAD")
    nodes = spread.worker_summary["nodes"]
    assert len(nodes) == 2 and nodes[0] != nodes[1], "the two workers must run on different nodes"
    single = run("single", "scaling.num_workers=1")
    assert spread.metrics["train/loss"] == pytest.approx(single.metrics["train/loss"], rel=1e-5)
    assert spread.metrics["train/grad_norm"] == pytest.approx(single.metrics["train/grad_norm"], rel=1e-4)
