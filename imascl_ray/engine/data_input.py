"""Where a rank's batches and pairs come from: the run's stream folder, or (older runs) the whole corpus.

The loop asks two things of its data: the batch plan (``steps_per_epoch``, ``position``, ``batches``,
``total_steps``) and, per step, the texts and teacher cache rows of some corpus rows. A run prepared
with a stream folder (:mod:`imascl_ray.data.stream`) gets :class:`~imascl_ray.data.stream.StreamedPairs`:
everything memory-mapped, so the rank's memory follows its batch. A run prepared before that
(``prepared.stream`` is None, e.g. resumed from an old run folder) gets :class:`InMemoryPairs`: the
corpus read whole and the plan built here, as every worker did before; the same batches either way.
So does a run whose schedule is not the one the folder was planned for (another global batch, seed,
or more epochs than prepared: a test or tool reusing a prepared run), with one warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol

import numpy as np

from imascl_ray.config import Config
from imascl_ray.data import BatchPlan, Corpus, GlobalBatch
from imascl_ray.preparation import PreparedRun

logger = logging.getLogger(__name__)


class PairSource(Protocol):
    """The plan and the rows of a rank's training data (see the module docstring)."""

    steps_per_epoch: int

    def position(self, global_step: int) -> tuple[int, int]: ...
    def total_steps(self, epochs: int) -> int: ...
    def batches(self, epoch: int, start_step: int = 0): ...
    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]: ...
    def teacher_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class InMemoryPairs:
    """The whole training corpus and a :class:`BatchPlan` in this process (runs without a stream folder).

    ``teacher_row``: sentence id -> teacher cache row (``prepared.teacher_rows``), else the identity.
    """

    def __init__(self, corpus: Corpus, plan: BatchPlan, teacher_row: np.ndarray, cache_rows: int) -> None:
        self.corpus, self.plan = corpus, plan
        n_sentences = len(corpus.sentences())
        src_ids, tgt_ids = corpus.sentence_ids()
        out_of_range = n_sentences > 0 and teacher_row.max() >= cache_rows
        if len(teacher_row) != n_sentences or out_of_range:
            raise ValueError(
                f"the teacher cache ({cache_rows} sentences, {len(teacher_row)} mapped) does not match the "
                f"training corpus ({n_sentences} sentences): prepare the run again"
            )
        self._teacher_src, self._teacher_tgt = teacher_row[src_ids], teacher_row[tgt_ids]
        self.steps_per_epoch = plan.steps_per_epoch

    def position(self, global_step: int) -> tuple[int, int]:
        return self.plan.position(global_step)

    def total_steps(self, epochs: int) -> int:
        return self.plan.total_steps(epochs)

    def batches(self, epoch: int, start_step: int = 0):
        return self.plan.batches(epoch, start_step)

    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.corpus.src[i] for i in rows], [self.corpus.tgt[i] for i in rows]

    def teacher_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._teacher_src[rows], self._teacher_tgt[rows]


def _fits(pairs, config: Config) -> bool:
    """Whether the stream folder's plan is the one ``config`` asks for (a test or tool may reuse a prepared
    run under another schedule)."""
    schedule, meta = config.schedule, pairs.meta
    if (meta["global_batch_size"], meta["seed"], meta["mixed"]) != (
        schedule.global_batch_size,
        schedule.seed,
        config.data.mixed_batches,
    ):
        return False
    steps = schedule.max_steps or pairs.total_steps(schedule.epochs)
    return math.ceil(steps / pairs.steps_per_epoch) <= int(meta["epochs"])


def open_pairs(config: Config, prepared: PreparedRun, world_size: int, cache) -> PairSource:
    """The rank's :class:`PairSource`: the stream folder when the run has one, else the corpus in memory.

    The stream folder's teacher rows were checked against the cache on the driver; here only its
    recorded fingerprint is compared with the cache's (nothing is read whole).
    """
    from imascl_ray.data import read_corpus
    from imascl_ray.data.stream import StreamedPairs

    if prepared.stream:
        pairs = StreamedPairs.open(prepared.stream, world_size)
        if pairs.meta.get("teacher_cache") != cache.fingerprint or pairs.meta.get(
            "teacher_cache_rows"
        ) != len(cache):
            raise ValueError(
                f"{prepared.stream} was planned for teacher cache {pairs.meta.get('teacher_cache')}, not "
                f"{cache.fingerprint} ({Path(prepared.teacher_cache).name}): prepare the run again"
            )
        if _fits(pairs, config):
            return pairs
        logger.warning(
            "%s was planned for another schedule (global batch, seed, mixed batches or epochs) than this "
            "run's: reading the training corpus whole and planning here",
            prepared.stream,
        )
    corpus = read_corpus(prepared.train)
    plan = BatchPlan(
        corpus,
        config.schedule.global_batch_size,
        world_size,
        config.schedule.seed,
        mixed=config.data.mixed_batches,
        priority=prepared.priority,
    )
    if prepared.teacher_rows:
        teacher_row = np.load(prepared.teacher_rows)
    else:
        teacher_row = np.arange(len(cache), dtype=np.int64)
    return InMemoryPairs(corpus, plan, teacher_row, len(cache))


__all__ = ["GlobalBatch", "InMemoryPairs", "PairSource", "open_pairs"]
