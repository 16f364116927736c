"""The stream folder (issue 26): the same batches as the in-memory plan, exact resume, a worker reads only
its rows, the teacher rows match the in-memory lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from imascl_ray.data import BatchPlan, Corpus
from imascl_ray.data.batch_plan import _conflict_classes as _sequential_classes
from imascl_ray.data.plan_arrays import conflict_classes
from imascl_ray.data.stream import StreamedPairs, write_stream
from imascl_ray.errors import InputError


def _corpus_with_repeats(n: int, pool: int, seed: int = 1) -> Corpus:
    """Sentences drawn from a small pool (many repeats, both sides), two language pairs."""
    rng = np.random.default_rng(seed)
    src = [f"s{i}" for i in rng.integers(0, pool, n)]
    tgt = [f"T{i}" if rng.random() < 0.9 else f"S{j}" for i, j in rng.integers(0, pool, (n, 2))]
    langs = [("en", "fr") if rng.random() < 0.6 else ("de", "en") for _ in range(n)]
    return Corpus([a for a, _ in langs], [b for _, b in langs], src, tgt)


def _write(corpus: Corpus, directory, G: int, seed: int, mixed: bool = False, epochs: int = 2) -> dict:
    n = len(corpus)
    return write_stream(
        directory,
        src_lang=corpus.src_lang,
        tgt_lang=corpus.tgt_lang,
        src=corpus.src,
        tgt=corpus.tgt,
        teacher_src=np.arange(n),
        teacher_tgt=np.arange(n) + n,
        global_batch_size=G,
        seed=seed,
        mixed=mixed,
        priority=["en", "fr", "de"],
        total_steps=None,
        epochs=epochs,
    )


@pytest.mark.parametrize(("pool", "G", "mixed"), [(400, 8, False), (2000, 16, True), (30, 4, False)])
@pytest.mark.parametrize("seed", [0, 3])
def test_streamed_batches_equal_the_in_memory_plan(tmp_path, pool, G, mixed, seed):
    corpus = _corpus_with_repeats(2000, pool)
    plan = BatchPlan(corpus, G, 2, seed, mixed=mixed, priority=["en", "fr", "de"])
    meta = _write(corpus, tmp_path, G, seed, mixed)
    streamed = StreamedPairs.open(tmp_path, world_size=2)
    assert streamed.steps_per_epoch == plan.steps_per_epoch
    assert (meta["duplicates_removed"], meta["unused_rows"]) == (plan.duplicates_removed, plan.unused_rows)
    for epoch in (0, 1):
        for ours, theirs in zip(streamed.batches(epoch), plan.batches(epoch), strict=True):
            assert np.array_equal(ours.pair_indices, theirs.pair_indices)
            assert ours.rank_slice(1).tolist() == theirs.rank_slice(1).tolist()
            assert (ours.language_pair, ours.anchor_side, ours.anchor_sides) == (
                theirs.language_pair,
                theirs.anchor_side,
                theirs.anchor_sides,
            )


def test_classes_hold_no_sentence_twice():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(0, 50, 3000).astype(np.uint64), rng.integers(30, 80, 3000).astype(np.uint64)
    classes, duplicates = conflict_classes(np.arange(3000), src, tgt, np.random.default_rng(7))
    assert sum(map(len, classes)) + duplicates == 3000
    for members in classes:
        # a row may hold one sentence on both sides; no two rows of a class share one
        own = [src[members], tgt[members][tgt[members] != src[members]]]
        keys = np.concatenate(own)
        assert len(np.unique(keys)) == len(keys)
    # and they are the sequential first-fit colouring's classes, class for class
    sequential, sequential_duplicates = _sequential_classes(
        np.arange(3000), src, tgt, np.random.default_rng(7)
    )
    assert duplicates == sequential_duplicates
    assert [c.tolist() for c in classes] == [c.tolist() for c in sequential]


def test_resume_at_any_step_gives_the_same_batches(tmp_path):
    corpus = _corpus_with_repeats(1500, 1000)
    _write(corpus, tmp_path, 8, seed=5)
    streamed = StreamedPairs.open(tmp_path, world_size=2)
    whole = [b.pair_indices for b in streamed.batches(1)]
    for k in (0, 1, 17, len(whole) - 1, len(whole)):
        again = StreamedPairs.open(tmp_path, world_size=2)  # a restarted worker
        assert [b.pair_indices.tolist() for b in again.batches(1, k)] == [w.tolist() for w in whole[k:]]
    with pytest.raises(InputError, match="start_step"):
        next(streamed.batches(0, len(whole) + 1))


def test_texts_and_teacher_rows_are_the_rows_of_the_corpus(tmp_path):
    corpus = _corpus_with_repeats(600, 5000)
    _write(corpus, tmp_path, 4, seed=0)
    streamed = StreamedPairs.open(tmp_path)
    rows = np.array([5, 0, 599, 42])
    assert streamed.texts(rows) == ([corpus.src[i] for i in rows], [corpus.tgt[i] for i in rows])
    src_rows, tgt_rows = streamed.teacher_rows(rows)
    assert src_rows.tolist() == rows.tolist() and tgt_rows.tolist() == (rows + 600).tolist()


def test_an_indivisible_world_size_is_one_line(tmp_path):
    _write(_corpus_with_repeats(200, 5000), tmp_path, 6, seed=0)
    with pytest.raises(InputError, match="not divisible by world_size 4"):
        StreamedPairs.open(tmp_path, world_size=4)


def test_a_worker_reads_only_its_rows(tmp_path):
    """A corpus of ~1 GB of text; a process that opens it and reads 20 steps grows by a few MB."""
    n, width = 400_000, 1300
    words = np.array([f"w{i:04d}" for i in range(10_000)])
    src = [f"{i} " + "x" * width for i in range(n)]
    corpus_dir = tmp_path / "stream"
    write_stream(
        corpus_dir,
        src_lang=["en"] * n,
        tgt_lang=["fr"] * n,
        src=src,
        tgt=[f"{words[i % 10_000]} {i}" for i in range(n)],
        teacher_src=np.arange(n),
        teacher_tgt=np.arange(n),
        global_batch_size=64,
        seed=0,
        mixed=False,
        priority=["en", "fr"],
        total_steps=None,
        epochs=1,
    )
    del src
    script = textwrap.dedent(
        f"""
        import resource, numpy as np, pyarrow
        from imascl_ray.data.stream import StreamedPairs
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pairs = StreamedPairs.open({str(corpus_dir)!r}, world_size=2)
        for batch in pairs.batches(0, 100):
            if batch.step == 120:
                break
            src, tgt = pairs.texts(batch.rank_slice(1))
            pairs.teacher_rows(batch.pair_indices)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    grown_kib = int(
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    )
    corpus_mib = (corpus_dir / "texts.arrow").stat().st_size / 2**20
    assert corpus_mib > 500
    assert grown_kib / 1024 < 40, (
        f"the reader grew by {grown_kib / 1024:.0f} MiB on a {corpus_mib:.0f} MiB corpus"
    )
