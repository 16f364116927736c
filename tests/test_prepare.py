"""Preparing a run without Ray: splits, hard-negative mining, and the single-rank engine loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imascl_ray.config import load_config
from imascl_ray.data import Corpus, normalise_text, read_corpus, write_corpus
from imascl_ray.engine.guards import NonFiniteLossError
from imascl_ray.engine.loop import SCORE, RankContext, TrainingLoop
from imascl_ray.preparation import PreparedRun, prepare_run, resolve_model
from imascl_ray.preparation.mining import mine_hard_negatives
from imascl_ray.preparation.splits import split_corpus
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
    split, priority = split_corpus(config, corpus)
    train, validation, test = split.train, split.validation, split.test
    assert (len(validation), len(test)) == (100, 50)
    assert len(train) <= 300
    assert not set(train.src) & set(validation.src) and not set(train.src) & set(test.src)
    assert not set(validation.src) & set(test.src)
    assert priority[0] == "en"
    again, _ = split_corpus(config, corpus)
    assert again.train == train and again.validation == validation and again.test == test


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


@pytest.fixture(scope="module")
def sweep_corpus(tmp_path_factory) -> Path:
    """en-fr, en-ja and en-ru pairs over the same English sentences (as gettext catalogues have)."""
    base = synthetic_parallel_corpus(160, pair_names=("en-fr", "en-ja", "en-ru"))
    groups = base.groups()
    english = groups["en-fr"][0]
    corpus = Corpus.from_groups({name: (english, targets) for name, (_, targets) in groups.items()})
    return write_corpus(corpus, tmp_path_factory.mktemp("sweep") / "corpus.parquet")


def sweep_trial(assets, corpus: Path, output: Path, pair_set: str, *overrides: str):
    return config_for(
        assets,
        output,
        f"data.corpus={corpus}",
        "data.languages=[en,fr,ja,ru]",
        f"data.pair_set={pair_set}",
        "data.validation_pairs=20",
        "data.test_pairs=10",
        *overrides,
    )


def test_trials_of_a_pair_set_sweep_are_scored_on_one_validation_set_none_trains_on(
    assets, sweep_corpus, tmp_path
):
    corpus = read_corpus(sweep_corpus)
    union = "data.validation_pair_set=en-fr+en-ja+en-ru"
    splits = {
        pair_set: split_corpus(sweep_trial(assets, sweep_corpus, tmp_path, pair_set, union), corpus)[0]
        for pair_set in ("en-fr", "en-fr+en-ja", "en-xx")
    }
    first = splits["en-fr"]
    assert first.validation_pairs == ["en-fr", "en-ja", "en-ru"]
    assert first.validation.pair_counts() == {"en-fr": 20, "en-ja": 20, "en-ru": 20}
    for split in splits.values():
        assert split.validation_pairs == first.validation_pairs and split.validation == first.validation
        held_out = {normalise_text(t) for t in [*split.validation.src, *split.validation.tgt]}
        assert held_out.isdisjoint(normalise_text(t) for t in [*split.train.src, *split.train.tgt])
    assert set(splits["en-fr"].train.pair_counts()) == {"en-fr"}
    # Without the key a run is scored on its own pairs, on the very rows the sweep uses for them.
    own, _ = split_corpus(sweep_trial(assets, sweep_corpus, tmp_path, "en-fr+en-ja"), corpus)
    assert own.validation_pairs == ["en-fr", "en-ja"]
    for name in own.validation_pairs:
        assert own.validation.groups()[name] == first.validation.groups()[name]

    prepared = prepare_run(sweep_trial(assets, sweep_corpus, tmp_path, "en-fr", union), tmp_path / "run")
    assert prepared.validation_pairs == ["en-fr", "en-ja", "en-ru"]
    assert PreparedRun.load(tmp_path / "run").validation_pairs == prepared.validation_pairs
    assert read_corpus(prepared.validation) == first.validation


def test_a_validation_pair_set_the_corpus_lacks_names_the_key(assets, sweep_corpus, tmp_path):
    from imascl_ray.errors import InputError

    config = sweep_trial(
        assets,
        sweep_corpus,
        tmp_path,
        "en-fr",
        "data.languages=[en,fr,ja,ru,ko]",
        "data.validation_pair_set=en-xx",
    )
    with pytest.raises(InputError, match=r"data.validation_pair_set: .*no en-ko pairs"):
        split_corpus(config, read_corpus(sweep_corpus))


def test_hard_negatives_never_repeat_the_pairs_own_text_when_few_distinct_targets_exist():
    """Targets that differ only in case or spacing, and a target equal to another pair's source: the
    teacher ranks them first (identical vectors here), and mining must still skip them."""
    rows = [
        ("Save", "OK"),
        ("Accept", "ok"),
        ("Confirm", " Ok "),
        ("Cancel", "Annuler"),
        ("Open", "Ouvrir"),
        ("Firefox", "Firefox"),  # untranslated
        ("Browser", "firefox"),
        ("Close", "Fermer"),
    ]
    corpus = Corpus.from_pairs([("en", "fr", src, tgt) for src, tgt in rows])
    sentences = corpus.sentences()
    rng = np.random.default_rng(1)
    by_text = {}
    embeddings = np.stack(
        [by_text.setdefault(normalise_text(s), rng.normal(size=8)) for s in sentences]
    ).astype(np.float32)
    negatives = mine_hard_negatives(corpus, embeddings, k=2)
    for row, picked in enumerate(negatives):
        own = {normalise_text(corpus.src[row]), normalise_text(corpus.tgt[row])}
        assert row not in picked
        assert all(normalise_text(corpus.tgt[int(other)]) not in own for other in picked), (row, picked)
    # "OK" has 3 same-text rows among 8: only 5 other targets, too few for 6 negatives.
    from imascl_ray.errors import InputError

    with pytest.raises(InputError, match=r"loss.hard_negatives: en-fr has only \d other target\(s\)"):
        mine_hard_negatives(corpus, embeddings, k=6)


def test_a_trimmed_vocabulary_run_starts_from_a_smaller_student_that_embeds_its_corpus_the_same(
    assets, tmp_path
):
    from imascl_ray.preparation.student import load_student

    config = config_for(assets, tmp_path, "model.trim_vocabulary=true")
    prepared = prepare_run(config, tmp_path / "run")
    trimmed, whole = (
        load_student(config.model, prepared.student),
        load_student(config.model, str(assets["model"])),
    )
    rows = trimmed.model.get_input_embeddings().num_embeddings
    assert (
        prepared.student != str(assets["model"]) and rows < whole.model.get_input_embeddings().num_embeddings
    )
    texts = read_corpus(prepared.train).sentences()[:64]
    np.testing.assert_allclose(trimmed.encode(texts).numpy(), whole.encode(texts).numpy(), atol=1e-5)
