"""Preparing a run without Ray: splits, hard-negative mining, and the single-rank engine loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imascl_ray.config import load_config
from imascl_ray.data import Corpus, read_corpus, write_corpus
from imascl_ray.engine.guards import NonFiniteLossError
from imascl_ray.engine.loop import SCORE, RankContext, TrainingLoop
from imascl_ray.prepare import PreparedRun, mine_hard_negatives, prepare_run, resolve_model, split_corpus
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    return {
        "model": build_tiny_model(folder / "tiny"),
        "corpus": write_corpus(synthetic_parallel_corpus(600), folder / "corpus.parquet"),
    }


def config_for(assets, output: Path, *overrides: str):
    return load_config(
        None,
        [
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            "data.languages=[en,fr]",
            "data.pair_set=en-fr",
            "data.validation_pairs=100",
            "data.test_pairs=50",
            "model.max_length=32",
            "teacher.max_length=32",
            "schedule.global_batch_size=16",
            "scaling.num_workers=1",
            f"tracking.output_dir={output}",
            *overrides,
        ],
    )


def test_splits_are_disjoint_capped_and_deterministic(assets, tmp_path):
    config = config_for(assets, tmp_path, "data.max_pairs_per_language_pair=300")
    corpus = read_corpus(assets["corpus"])
    train, validation, test, priority = split_corpus(config, corpus)
    assert (len(validation), len(test)) == (100, 50)
    assert len(train) <= 300
    assert not set(train.src) & set(validation.src) and not set(train.src) & set(test.src)
    assert not set(validation.src) & set(test.src)
    assert priority[0] == "en"
    again = split_corpus(config, corpus)
    assert again[0] == train and again[1] == validation and again[2] == test


def test_hard_negatives_are_the_teacher_nearest_other_targets():
    rng = np.random.default_rng(0)
    corpus = Corpus.from_groups(
        {
            "en-fr": ([f"s{i}" for i in range(30)], [f"t{i}" for i in range(30)]),
            "en-ja": ([f"u{i}" for i in range(20)], [f"v{i}" for i in range(20)]),
        }
    )
    sentences = corpus.sentences()
    embeddings = rng.normal(size=(len(sentences), 8)).astype(np.float32)
    negatives = mine_hard_negatives(corpus, embeddings, k=3, chunk=7)
    _, tgt_ids = corpus.sentence_ids()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for row in range(len(corpus)):
        same_pair = [
            r for r in range(len(corpus)) if corpus.pair_names()[r] == corpus.pair_names()[row] and r != row
        ]
        scores = {r: float(unit[tgt_ids[row]] @ unit[tgt_ids[r]]) for r in same_pair}
        expected = sorted(scores, key=scores.get, reverse=True)[:3]
        assert list(negatives[row]) == expected


def test_offline_model_name_is_checked():
    from imascl_ray.errors import InputError

    with pytest.raises(InputError, match="unknown offline model 'offline:labse'"):
        resolve_model("offline:labse")
    assert resolve_model("some/hub-id") == "some/hub-id"


def test_single_rank_loop_learns_and_reports_checkpoints(assets, tmp_path):
    config = config_for(
        assets,
        tmp_path,
        "loss.name=hard_negatives",
        "loss.hard_negatives=2",
        "optim.lr=1e-3",
        "schedule.max_steps=40",
        "schedule.log_every=10",
        "schedule.eval_every=20",
    )
    prepared = prepare_run(config, tmp_path / "run")
    assert PreparedRun.load(tmp_path / "run") == prepared
    assert np.load(prepared.hard_negatives).shape == (len(read_corpus(prepared.train)), 2)
    reports = []
    summary = TrainingLoop(config, prepared, RankContext(), lambda m, c: reports.append((m, c))).run()
    assert summary["global_step"] == 40
    checkpoints = [(m, c) for m, c in reports if c is not None]
    assert [m["step"] for m, _ in checkpoints] == [20, 40]
    assert all(SCORE in m for m, _ in checkpoints)
    assert reports[-1][0]["train/loss"] < reports[0][0]["train/loss"]


def test_patience_stops_early(assets, tmp_path):
    config = config_for(
        assets,
        tmp_path,
        "optim.lr=1e-9",
        "schedule.max_steps=60",
        "schedule.eval_every=5",
        "schedule.log_every=5",
        "schedule.patience=2",
    )
    prepared = prepare_run(config, tmp_path / "run")
    summary = TrainingLoop(config, prepared, RankContext(), lambda m, c: None).run()
    assert summary["global_step"] < 60


def test_a_non_finite_loss_names_the_step_and_the_terms(assets, tmp_path):
    config = config_for(assets, tmp_path, "loss.tau=1e-300", "loss.tms=true", "schedule.max_steps=3")
    prepared = prepare_run(config, tmp_path / "run")
    with pytest.raises(
        NonFiniteLossError, match=r"step 1: non-finite loss \(loss=nan, cross=nan, mono=nan\)"
    ):
        TrainingLoop(config, prepared, RankContext(), lambda m, c: None).run()
