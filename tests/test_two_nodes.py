"""Two Ray nodes on one machine (two raylets): what must hold across nodes, on one two-node cluster.

A Train run's two workers on different nodes gather by global rank, not local rank; a sweep over
``data.pair_set`` ranks every trial on one validation set (issue 13): the trials train on different
pair sets, validate on the same pairs, and never train on any of them.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from ray_nodes import two_raylets
from tiny_runs import en_fr_overrides

from imascl_ray.config import load_config
from imascl_ray.data import read_corpus, write_corpus
from imascl_ray.preparation import PreparedRun
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.train.trainer import run_training
from imascl_ray.tune import results
from imascl_ray.tune.space import load_space
from imascl_ray.tune.sweep import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_node_cluster():
    # 2 CPUs a node: a trial's own process and one worker on the head, the other worker on the second;
    # STRICT_SPREAD puts a Train run's two workers on different nodes.
    with two_raylets(cpus_per_node=2) as cluster:
        yield cluster


def test_one_worker_per_node_takes_the_same_first_step_as_a_single_worker(two_node_cluster, tmp_path):
    """2 workers on 2 nodes, the loss in its local form, give 1 worker's loss and gradient norm on the
    same global batch: the batch is sliced, and the embeddings gathered, by global rank (both workers
    have local rank 0 here), and the local form equals the full one. (Each loss's full and local forms
    on 2 ranks against one process: tests/test_distributed.py.)"""
    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    corpus = write_corpus(synthetic_parallel_corpus(400), tmp_path / "corpus.parquet")

    def run(name: str, *overrides: str):
        config = load_config(
            None,
            [
                *en_fr_overrides(model, corpus, tmp_path / name, validation_pairs=50, max_length=32),
                "schedule.global_batch_size=16",
                "schedule.max_steps=1",
                "schedule.eval_every=1",
                "loss.name=soft",
                "loss.labels=average",
                "loss.tms=true",
                "eval.suite=none",
                "scaling.cpus_per_worker=1",
                *overrides,
            ],
        )
        return run_training(config, run_name=name)

    spread = run(
        "spread", "scaling.num_workers=2", "scaling.placement_strategy=STRICT_SPREAD", "loss.local=true"
    )
    nodes = spread.worker_summary["nodes"]
    assert len(nodes) == 2 and nodes[0] != nodes[1], "the two workers must run on different nodes"
    single = run("single", "scaling.num_workers=1")
    assert spread.metrics["train/loss"] == pytest.approx(single.metrics["train/loss"], rel=1e-5)
    assert spread.metrics["train/grad_norm"] == pytest.approx(single.metrics["train/grad_norm"], rel=1e-4)


def test_a_pair_set_sweep_on_two_nodes_scores_every_trial_on_one_validation_set(two_node_cluster, tmp_path):
    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    corpus = write_corpus(
        synthetic_parallel_corpus(500, pair_names=("en-fr", "en-ru")), tmp_path / "corpus.parquet"
    )
    space_file = tmp_path / "pair-sets.yaml"
    space_file.write_text(
        f"""
name: pair-sets
overrides:
  model: {{name: {model}, max_length: 32}}
  teacher: {{max_length: 32}}
  data: {{corpus: {corpus}, languages: [en, fr, ru], validation_pairs: 40, test_pairs: 0}}
  loss: {{teacher_tau: 0.01}}
  optim: {{lr: 5.0e-3}}
  schedule: {{global_batch_size: 16, max_steps: 4, eval_every: 4, log_every: 4}}
  scaling: {{num_workers: 2, cpus_per_worker: 1, placement_strategy: STRICT_SPREAD}}
  eval: {{suite: none}}
  tracking: {{output_dir: {tmp_path}}}
search:
  data.pair_set: {{grid: [en-fr, en-fr+en-ru]}}
scheduler: {{name: fifo}}
resources: {{trial_cpus: 1}}
""",
        encoding="utf-8",
    )
    space = load_space(space_file)
    assert list(space.parameters) == ["data.pair_set"]
    outcome = run_sweep(space, name="two-nodes")

    assert {record.params["data.pair_set"] for record in outcome.records} == {"en-fr", "en-fr+en-ru"}
    # STRICT_SPREAD: a trial whose two workers could not be placed on two nodes would not have run.
    assert all(record.status == results.FINISHED for record in outcome.records), outcome.table
    client = MlflowClient(tracking_uri=outcome.mlflow_uri)
    validation = {}
    for record in outcome.records:
        prepared = PreparedRun.load(tmp_path / "runs" / record.run_name)
        held_out = read_corpus(prepared.validation)
        trained = {(pair.src, pair.tgt) for pair in read_corpus(prepared.train)}
        assert not trained & {(pair.src, pair.tgt) for pair in held_out}, record.run_name
        pair_set = record.params["data.pair_set"]
        validation[pair_set] = (prepared.validation_pairs, held_out)
        [child] = client.search_runs(
            [client.get_run(outcome.parent_run_id).info.experiment_id],
            filter_string=f"tags.`imascl.trial_id` = '{record.trial_id}'",
        )
        metrics = child.data.metrics  # the sweep metric is the mean over both validation pairs
        per_pair = [metrics[f"val/{pair}/acc"] for pair in ("en-fr", "en-ru")]
        assert metrics["val/mean/acc"] == pytest.approx(sum(per_pair) / 2), pair_set
        assert record.best == pytest.approx(metrics["val/mean/acc"])
    assert validation["en-fr"][0] == validation["en-fr+en-ru"][0] == ["en-fr", "en-ru"]
    assert validation["en-fr"][1] == validation["en-fr+en-ru"][1]  # the same pairs, row for row
