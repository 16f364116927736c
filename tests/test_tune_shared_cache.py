"""One teacher cache per sweep: built over the union of every pair set's training sentences, and each
trial's training loop reads exactly the teacher vectors its own sentences have (no Ray here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imascl_ray.config import load_config
from imascl_ray.data import read_corpus, write_corpus
from imascl_ray.engine.loop import RankContext, TrainingLoop
from imascl_ray.errors import InputError
from imascl_ray.preparation import build_shared_teacher_cache, prepare_run
from imascl_ray.teacher import Teacher, TeacherCache
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    corpus = synthetic_parallel_corpus(150, pair_names=("en-fr", "en-ru"))
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.0),
        "corpus": write_corpus(corpus, folder / "corpus.parquet"),
    }


def config_for(assets, output: Path, pair_set: str, *extra: str):
    return load_config(
        None,
        [
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            "data.languages=[en,fr,ru]",
            f"data.pair_set={pair_set}",
            "data.validation_pairs=30",
            "model.max_length=32",
            "teacher.max_length=32",
            "schedule.global_batch_size=8",
            "scaling.num_workers=1",
            f"tracking.output_dir={output}",
            *extra,
        ],
    )


def test_the_shared_cache_holds_the_union_and_trials_map_their_sentences_to_it(assets, tmp_path):
    variants = {
        "en-fr": config_for(assets, tmp_path, "en-fr"),
        "en-fr+en-ru": config_for(assets, tmp_path, "en-fr+en-ru"),
    }
    shared = build_shared_teacher_cache(variants, tmp_path / "sweep")
    cache = TeacherCache.open(shared.cache)
    teacher = Teacher.from_pretrained(assets["model"], max_length=32)

    train_sets = {}
    for label, config in variants.items():
        prepared = prepare_run(config, tmp_path / label, shared_teacher=shared)
        train = read_corpus(prepared.train)
        train_sets[label] = set(train.sentences())
        assert prepared.teacher_cache == str(cache.directory)  # no cache of its own
        rows = np.load(prepared.teacher_rows)
        # Row r of the shared cache is the teacher's own embedding of the trial's sentence.
        expected = teacher.encode(train.sentences()).numpy()
        np.testing.assert_allclose(cache.embeddings[rows], expected, atol=1e-5)
    # The cache is exactly the union; the larger pair set is a strict superset of the smaller.
    assert len(cache) == len(train_sets["en-fr"] | train_sets["en-fr+en-ru"])
    assert train_sets["en-fr"] < train_sets["en-fr+en-ru"]
    assert len(list(Path(shared.cache).parent.glob("teacher-*"))) == 1


def test_the_loop_reads_the_same_teacher_vectors_from_the_shared_cache_as_from_its_own(assets, tmp_path):
    own_config = config_for(assets, tmp_path / "own", "en-fr")
    own = prepare_run(own_config, tmp_path / "own" / "run")
    shared = build_shared_teacher_cache(
        {
            "a": config_for(assets, tmp_path / "shared", "en-fr"),
            "b": config_for(assets, tmp_path / "shared", "en-fr+en-ru"),
        },
        tmp_path / "sweep",
    )
    via_shared = prepare_run(
        config_for(assets, tmp_path / "shared", "en-fr"), tmp_path / "run", shared_teacher=shared
    )
    assert own.teacher_rows is None and via_shared.teacher_rows is not None
    assert len(TeacherCache.open(via_shared.teacher_cache)) > len(TeacherCache.open(own.teacher_cache))

    def reporter(metrics, checkpoint):
        pass

    loops = [TrainingLoop(own_config, prepared, RankContext(), reporter) for prepared in (own, via_shared)]
    batch = next(iter(loops[0].plan.batches(0)))
    for mine, theirs in zip(loops[0]._teacher_rows(batch), loops[1]._teacher_rows(batch), strict=True):
        assert torch.equal(mine, theirs)


def test_a_pair_set_the_corpus_lacks_names_its_variant(assets, tmp_path):
    variants = {
        "space.yaml, line 9: data.pair_set=en-fr+en-ja": config_for(
            assets, tmp_path, "en-fr+en-ja", "data.languages=[en,fr,ru,ja]"
        )
    }
    with pytest.raises(InputError, match=r"line 9: data.pair_set=en-fr\+en-ja: .*no en-ja pairs"):
        build_shared_teacher_cache(variants, tmp_path / "sweep")


def test_variants_with_different_teachers_cannot_share_a_cache(assets, tmp_path):
    variants = {
        "a": config_for(assets, tmp_path, "en-fr"),
        "b": config_for(assets, tmp_path, "en-fr", "teacher.max_length=16"),
    }
    with pytest.raises(InputError, match="share the teacher"):
        build_shared_teacher_cache(variants, tmp_path / "sweep")


def test_two_trials_over_different_pair_sets_are_scored_on_one_validation_set_neither_trains_on(
    assets, tmp_path
):
    """The sweep's yardstick (issue 13.1): the smoke space searches data.pair_set over en-fr and
    en-fr+en-ru; both trials validate on the identical en-fr + en-ru pairs, and neither trains on any."""
    from imascl_ray.tune.space import load_space

    root = Path(__file__).resolve().parents[1]
    space = load_space(
        root / "tune_spaces" / "smoke.yaml",
        [
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            f"tracking.output_dir={tmp_path}",
            "data.validation_pairs=30",
            "data.test_pairs=0",
        ],
    )
    shared = build_shared_teacher_cache(space.data_variants(), tmp_path / "sweep")
    point = space.points_to_evaluate[0]
    validation, training = {}, {}
    for pair_set in ("en-fr", "en-fr+en-ru"):
        config = space.trial_config({**point, "data.pair_set": pair_set})
        prepared = prepare_run(config, tmp_path / "runs" / pair_set, shared_teacher=shared)
        validation[pair_set] = read_corpus(prepared.validation)
        training[pair_set] = read_corpus(prepared.train)
    assert validation["en-fr"] == validation["en-fr+en-ru"]  # the same pairs, row for row
    assert validation["en-fr"].pair_counts() == {"en-fr": 30, "en-ru": 30}
    held_out = {(p.src, p.tgt) for p in validation["en-fr"]}
    for pair_set, train in training.items():
        assert sorted(train.pair_counts()) == (["en-fr"] if pair_set == "en-fr" else ["en-fr", "en-ru"])
        assert not held_out & {(p.src, p.tgt) for p in train}, pair_set  # never trained on


def test_trials_scored_on_the_union_of_the_pair_sets_find_their_sentences_in_the_shared_cache(
    assets, tmp_path
):
    """A sweep builds the cache from its variants; each trial then sets data.validation_pair_set to the
    union of the searched sets, which only takes more held-out rows out of its training set."""
    pair_sets = ("en-fr", "en-fr+en-ru")
    shared = build_shared_teacher_cache(
        {pair_set: config_for(assets, tmp_path, pair_set) for pair_set in pair_sets}, tmp_path / "sweep"
    )
    scored = {}
    for pair_set in pair_sets:
        trial = config_for(assets, tmp_path, pair_set, "data.validation_pair_set=en-fr+en-ru")
        prepared = prepare_run(trial, tmp_path / pair_set, shared_teacher=shared)
        scored[pair_set] = (prepared.validation_pairs, read_corpus(prepared.validation))
        assert len(np.load(prepared.teacher_rows)) == len(read_corpus(prepared.train).sentences())
    assert scored["en-fr"][0] == scored["en-fr+en-ru"][0] == ["en-fr", "en-ru"]
    assert scored["en-fr"][1] == scored["en-fr+en-ru"][1]
