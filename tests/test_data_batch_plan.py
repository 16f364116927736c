"""The batch plan: equal rank slices, one pair per batch, no repeated sentence, determinism, resume."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from imascl_ray.data import BatchPlan, Corpus, normalise_text
from imascl_ray.errors import InputError


def synthetic(counts: dict[str, int]) -> Corpus:
    rows = []
    for name, count in counts.items():
        src_lang, tgt_lang = name.split("-")
        rows += [
            (src_lang, tgt_lang, f"{src_lang} sentence {i} of {name}", f"{tgt_lang} phrase {i} of {name}")
            for i in range(count)
        ]
    return Corpus.from_pairs(rows)


def with_repeats() -> Corpus:
    """en-fr pairs where some English sentences have 2-3 French translations, plus exact duplicates."""
    rows = []
    for i in range(60):
        rows.append(("en", "fr", f"Message number {i}", f"Message numéro {i}"))
        if i % 3 == 0:
            rows.append(("en", "fr", f"message  NUMBER {i}", f"Le message {i}"))  # same English, normalised
        if i % 6 == 0:
            rows.append(("en", "fr", f"Message number {i}", f"Encore le message {i}"))
        if i % 5 == 0:
            rows.append(("en", "fr", f"Message number {i}", f"Message numéro {i}"))  # exact duplicate row
    rows += [("en", "fr", f"Shared text {i}", f"Shared text {i}") for i in range(4)]  # src == tgt is fine
    return Corpus.from_pairs(rows)


def assert_no_repeated_sentence(corpus: Corpus, rows: np.ndarray) -> None:
    """Independent check: every normalised sentence of the batch belongs to exactly one of its pairs."""
    owners: dict[str, set[int]] = {}
    for row in rows:
        for text in (corpus.src[row], corpus.tgt[row]):
            owners.setdefault(normalise_text(text), set()).add(int(row))
    assert all(len(rows_of_text) == 1 for rows_of_text in owners.values())


def test_global_batch_must_divide_among_ranks():
    with pytest.raises(InputError, match=r"global_batch_size: 30 is not divisible by world_size 4"):
        BatchPlan(synthetic({"en-fr": 100}), 30, 4)


def test_corpus_smaller_than_one_global_batch_is_an_error():
    with pytest.raises(
        InputError,
        match=r"global_batch_size: the corpus \(12 pairs; en-fr: 7, en-ja: 5\) is "
        r"smaller than one global batch of 8",
    ):
        BatchPlan(synthetic({"en-fr": 7, "en-ja": 5}), 8, 2)


def test_one_language_pair_per_batch_and_equal_rank_slices():
    corpus = synthetic({"en-fr": 37, "en-ja": 21, "ja-ko": 5})
    plan = BatchPlan(corpus, 8, 4, seed=7)
    assert plan.steps_per_epoch == 37 // 8 + 21 // 8  # ja-ko is too small for one batch
    assert plan.skipped_pairs == ["ja-ko"] and plan.unused_rows == 5
    names = corpus.pair_names()
    batches = list(plan.batches(0))
    assert [batch.step for batch in batches] == list(range(plan.steps_per_epoch))
    for batch in batches:
        assert {names[row] for row in batch.pair_indices} == {batch.language_pair}
        slices = [batch.rank_slice(rank) for rank in range(4)]
        assert all(len(part) == 2 for part in slices)
        assert np.array_equal(np.concatenate(slices), batch.pair_indices)
    used = np.concatenate([batch.pair_indices for batch in batches])
    assert len(set(used.tolist())) == len(used)  # no pair twice in an epoch
    with pytest.raises(ValueError, match="rank 4 outside"):
        batches[0].rank_slice(4)


def test_every_pair_used_exactly_once_when_sizes_divide():
    corpus = synthetic({"en-fr": 32, "en-ru": 16})
    plan = BatchPlan(corpus, 8, 2, seed=0)
    used = sorted(np.concatenate([b.pair_indices for b in plan.batches(3)]).tolist())
    assert used == list(range(len(corpus)))


def test_no_sentence_twice_in_a_batch_even_with_repeated_sentences():
    corpus = with_repeats()
    plan = BatchPlan(corpus, 8, 2, seed=1)
    assert plan.duplicates_removed == 12  # i % 5 == 0 for i < 60
    uses = Counter()
    for epoch in range(6):
        batches = list(plan.batches(epoch))
        assert len(batches) == plan.steps_per_epoch
        for batch in batches:
            assert_no_repeated_sentence(corpus, batch.pair_indices)
            uses.update(batch.pair_indices.tolist())
    # the alternative translations are not thrown away: over a few epochs they get used too
    alternatives = [row for row, tgt in enumerate(corpus.tgt) if tgt.startswith(("Le message", "Encore"))]
    assert sum(uses[row] > 0 for row in alternatives) >= len(alternatives) - plan.unused_rows


def test_deterministic_from_seed_and_epoch():
    corpus = synthetic({"en-fr": 40, "en-ja": 40})

    def order(seed, epoch):
        return [b.pair_indices.tolist() for b in BatchPlan(corpus, 8, 2, seed=seed).batches(epoch)]

    assert order(5, 2) == order(5, 2)
    assert order(5, 2) != order(5, 3)
    assert order(5, 2) != order(6, 2)
    assert len(order(5, 2)) == len(order(5, 3)) == 10


def test_resume_from_epoch_and_step_neither_repeats_nor_skips():
    corpus = with_repeats()
    plan = BatchPlan(corpus, 8, 4, seed=11)
    full = list(plan.batches(4))
    for start in (0, 1, len(full) - 1, len(full)):
        resumed = list(BatchPlan(corpus, 8, 4, seed=11).batches(4, start_step=start))
        assert [b.step for b in resumed] == list(range(start, len(full)))
        assert all(
            np.array_equal(a.pair_indices, b.pair_indices) for a, b in zip(resumed, full[start:], strict=True)
        )
    assert plan.position(2 * plan.steps_per_epoch + 3) == (2, 3)
    with pytest.raises(InputError, match="start_step"):
        next(plan.batches(0, start_step=plan.steps_per_epoch + 1))


def test_anchor_side_follows_priority():
    corpus = synthetic({"en-fr": 16, "fr-ru": 16, "ja-en": 16})
    plan = BatchPlan(corpus, 8, 1, seed=0, priority="en,ru,ja,fr,ko")
    expected = {"en-fr": "src", "fr-ru": "tgt", "ja-en": "tgt"}
    for batch in plan.batches(0):
        assert batch.anchor_side == expected[batch.language_pair]
        assert set(batch.anchor_sides) == {batch.anchor_side}
    auto = BatchPlan(synthetic({"en-fr": 16, "fr-ru": 8, "ru-ja": 8}), 8, 1)
    assert auto.priority == ["fr", "en", "ru", "ja"]  # by volume: fr 24, en 16, ru 16 (tie: by code), ja 8


def test_mixed_batches_hold_several_pairs_without_repeats():
    rows = [("en", lang, f"Sentence {i}", f"{lang} sentence {i}") for lang in ("fr", "ja") for i in range(40)]
    corpus = Corpus.from_pairs(rows)  # every English sentence occurs twice (en-fr and en-ja)
    plan = BatchPlan(corpus, 16, 2, seed=3, mixed=True, priority="ja,en,fr")
    names = corpus.pair_names()
    assert plan.steps_per_epoch == 4
    seen_mixed = False
    for batch in plan.batches(0):
        assert batch.language_pair is None and batch.anchor_side is None
        assert_no_repeated_sentence(corpus, batch.pair_indices)
        sides = {names[r]: side for r, side in zip(batch.pair_indices, batch.anchor_sides, strict=True)}
        assert all(side == {"en-fr": "src", "en-ja": "tgt"}[name] for name, side in sides.items())
        seen_mixed |= len(sides) == 2
    assert seen_mixed


def test_pair_groups_mapping_is_accepted():
    groups = {"en-fr": ([f"s{i}" for i in range(8)], [f"t{i}" for i in range(8)])}
    plan = BatchPlan(groups, 4, 2, seed=0)
    batches = list(plan.batches(0))
    assert len(batches) == 2 and batches[0].language_pair == "en-fr"


def test_scales_to_250k_pairs():
    count = 250_000
    langs = ("fr", "ja", "ko", "ru", "de")
    corpus = Corpus(
        ["en"] * count,
        [langs[i % 5] for i in range(count)],
        [f"english sentence {i}" for i in range(count)],
        [f"translation {i}" for i in range(count)],
    )
    start = time.perf_counter()
    assert len(corpus.sentences()) == 2 * count
    plan = BatchPlan(corpus, 32, 4, seed=0)
    batches = list(plan.batches(0))
    elapsed = time.perf_counter() - start
    assert len(batches) == plan.steps_per_epoch == 5 * (50_000 // 32)
    assert elapsed < 30, f"building the sentence table and one epoch's plan took {elapsed:.1f} s"
