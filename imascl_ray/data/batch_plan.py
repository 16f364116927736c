"""The batch plan: which corpus rows form each global batch, and which slice each worker takes.

A global batch of ``G`` pairs is cut into ``W`` equal slices (``G`` divisible by ``W``); rank ``r``
takes slice ``r`` and every rank gathers the others' embeddings, so the loss sees ``G x G``
similarities. The plan guarantees:

- **one language pair per global batch** by default (as the authors train), or mixed pairs;
- **no sentence twice in a global batch**, on either side (compared normalised, one key space for both
  sides): a repeated sentence would be a false negative of the contrastive loss. Exact duplicate rows
  are removed; rows that share a sentence with another row are put in different *conflict classes*
  (a greedy colouring: a row goes to the first class holding none of its sentences) and a batch is cut
  from one class only. Unlike the authors' code, no batch is padded with random duplicates;
- **full batches only**: each class gives ``len // G`` batches an epoch, so the number of steps is the
  same for every rank and every epoch (``steps_per_epoch``). The few rows left over in a class change
  from epoch to epoch (each epoch reshuffles); a class smaller than ``G`` (rows whose sentence recurs
  many times) is never used, and ``unused_rows`` counts those;
- **deterministic from (seed, epoch)** and **resumable**: ``batches(epoch, start_step)`` rebuilds the
  epoch and starts at ``start_step``, so a resumed run neither repeats nor skips a pair.

Every batch records its language pair and its anchor side (the higher-priority language) for the
Priority label.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from imascl_ray.data.corpus import Corpus
from imascl_ray.data.languages import SRC, anchor_side, resolve_priority
from imascl_ray.data.split import normalise_text
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

MIXED = "mixed"
_COLOURING_STREAM = 0x5EED  # separates the colouring's random stream from the epochs' streams


@dataclass(frozen=True, eq=False)  # eq=False: the indices are an array, compared with np.array_equal
class GlobalBatch:
    """One optimisation step: ``G`` corpus row indices and how to share them among ``W`` ranks.

    Attributes:
        step: the position of this batch in its epoch (0-based).
        pair_indices: ``(G,)`` row indices into the corpus the plan was built from.
        language_pair: ``"en-fr"``, or ``None`` for a mixed batch.
        anchor_side: ``"src"`` or ``"tgt"``: the side of the higher-priority language (``None`` if mixed).
        anchor_sides: the anchor side of every pair of the batch (always given; equal when not mixed).
        world_size: the number of ranks sharing the batch.
    """

    step: int
    pair_indices: np.ndarray
    language_pair: str | None
    anchor_side: str | None
    anchor_sides: tuple[str, ...]
    world_size: int

    @property
    def size(self) -> int:
        return len(self.pair_indices)

    @property
    def local_batch_size(self) -> int:
        return self.size // self.world_size

    def rank_slice(self, rank: int) -> np.ndarray:
        """The ``G / W`` row indices rank ``rank`` encodes: slice ``rank`` of the global batch."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside 0..{self.world_size - 1}")
        size = self.local_batch_size
        return self.pair_indices[rank * size : (rank + 1) * size]


class BatchPlan:
    """Global batches over a corpus for ``world_size`` ranks; see the module docstring for guarantees.

    Args:
        corpus: a :class:`Corpus`, or ``{"en-fr": (sources, targets), ...}`` (rows are then numbered
            in that order, as :meth:`Corpus.from_groups` builds them).
        global_batch_size: ``G``, pairs per step over all ranks.
        world_size: ``W``, the number of ranks; ``G`` must be divisible by ``W``.
        seed: with the epoch, decides everything random.
        mixed: allow pairs of different language pairs in one batch.
        priority: language priority for the anchor side: ``"auto"`` (corpus volume) or an order.
    """

    def __init__(
        self,
        corpus: Corpus | Mapping[str, tuple[Sequence[str], Sequence[str]]],
        global_batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        *,
        mixed: bool = False,
        priority: str | Sequence[str] | None = "auto",
    ) -> None:
        if not isinstance(corpus, Corpus):
            corpus = Corpus.from_groups(corpus)
        if global_batch_size < 1:
            raise InputError(f"global_batch_size: must be at least 1, got {global_batch_size}")
        if world_size < 1:
            raise InputError(f"world_size: must be at least 1, got {world_size}")
        if global_batch_size % world_size:
            raise InputError(
                f"global_batch_size: {global_batch_size} is not divisible by world_size "
                f"{world_size}, so the ranks cannot take equal slices"
            )
        self.corpus = corpus
        self.global_batch_size = global_batch_size
        self.world_size = world_size
        self.seed = int(seed)
        self.mixed = mixed
        self.priority = resolve_priority(priority, corpus.src_lang, corpus.tgt_lang)
        self._anchor_of_row = np.array(
            [anchor_side(s, t, self.priority) for s, t in zip(corpus.src_lang, corpus.tgt_lang, strict=True)],
            dtype=object,
        )

        pools = {MIXED: np.arange(len(corpus))} if mixed else corpus.group_indices()
        src_keys, tgt_keys = self._sentence_keys(corpus)
        colouring_rng = np.random.default_rng([self.seed, _COLOURING_STREAM])
        self.duplicates_removed = 0
        self.unused_rows = 0
        self.skipped_pairs: list[str] = []
        # pool name -> conflict classes (arrays of row indices), each free of repeated sentences
        self._classes: dict[str, list[np.ndarray]] = {}
        for name, rows in pools.items():
            classes, duplicates = _conflict_classes(rows, src_keys, tgt_keys, colouring_rng)
            self.duplicates_removed += duplicates
            usable = [members for members in classes if len(members) >= global_batch_size]
            self.unused_rows += sum(len(members) for members in classes if len(members) < global_batch_size)
            if usable:
                self._classes[name] = usable
            else:
                self.skipped_pairs.append(name)
        self.steps_per_epoch = sum(
            len(members) // global_batch_size for classes in self._classes.values() for members in classes
        )
        if self.steps_per_epoch == 0:
            counts = ", ".join(f"{name}: {count}" for name, count in corpus.pair_counts().items())
            raise InputError(
                f"global_batch_size: the corpus ({len(corpus)} pairs; {counts or 'empty'}) is "
                f"smaller than one global batch of {global_batch_size} pairs"
                + ("" if mixed else " of a single language pair")
            )
        if self.skipped_pairs:
            logger.warning(
                "language pair(s) %s have fewer distinct pairs than one global batch (%d): not used",
                ", ".join(self.skipped_pairs),
                global_batch_size,
            )

    @staticmethod
    def _sentence_keys(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
        """Integer ids of the normalised sentences, one key space for both sides."""
        ids: dict[str, int] = {}
        src = np.fromiter(
            (ids.setdefault(normalise_text(s), len(ids)) for s in corpus.src),
            dtype=np.int64,
            count=len(corpus),
        )
        tgt = np.fromiter(
            (ids.setdefault(normalise_text(t), len(ids)) for t in corpus.tgt),
            dtype=np.int64,
            count=len(corpus),
        )
        return src, tgt

    @property
    def local_batch_size(self) -> int:
        """Pairs each rank encodes per step: ``G / W``."""
        return self.global_batch_size // self.world_size

    @property
    def pairs_per_epoch(self) -> int:
        return self.steps_per_epoch * self.global_batch_size

    def total_steps(self, epochs: int) -> int:
        """Steps of a run of ``epochs`` epochs (for a learning-rate schedule)."""
        return self.steps_per_epoch * epochs

    def position(self, global_step: int) -> tuple[int, int]:
        """``(epoch, step)`` of a run's ``global_step``-th step (0-based), to resume from."""
        return divmod(int(global_step), self.steps_per_epoch)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The row indices of every batch of ``epoch``, in step order (deterministic from seed, epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        batches: list[np.ndarray] = []
        for name in sorted(self._classes):
            for members in self._classes[name]:
                shuffled = rng.permutation(members)
                count = len(shuffled) // self.global_batch_size
                batches.extend(shuffled[: count * self.global_batch_size].reshape(count, -1))
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[GlobalBatch]:
        """The global batches of ``epoch`` from ``start_step`` on (resume: pass the next step to run)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise InputError(f"start_step: {start_step} outside 0..{self.steps_per_epoch} (steps per epoch)")
        names = self.corpus.pair_names() if not self.mixed else None
        for step, rows in enumerate(self.epoch_batches(epoch)):
            if step < start_step:
                continue
            sides = tuple(self._anchor_of_row[rows])
            if self.mixed:
                language_pair, side = None, None
            else:
                language_pair, side = names[rows[0]], sides[0]
            yield GlobalBatch(step, rows, language_pair, side, sides, self.world_size)

    def __repr__(self) -> str:
        return (
            f"BatchPlan(G={self.global_batch_size}, W={self.world_size}, steps/epoch="
            f"{self.steps_per_epoch}, mixed={self.mixed}, seed={self.seed})"
        )


def _conflict_classes(
    rows: np.ndarray, src_keys: np.ndarray, tgt_keys: np.ndarray, rng: np.random.Generator
) -> tuple[list[np.ndarray], int]:
    """Split ``rows`` into classes in which no sentence key occurs twice; drop exact duplicate rows.

    Rows are visited in a seeded random order and each joins the first class holding neither of its
    keys (first-fit colouring). Returns the classes (largest first, as built) and the duplicates count.
    """
    classes: list[list[int]] = []
    key_classes: dict[int, set[int]] = {}
    seen_pairs: set[tuple[int, int]] = set()
    duplicates = 0
    for row in rng.permutation(rows):
        src, tgt = int(src_keys[row]), int(tgt_keys[row])
        if (src, tgt) in seen_pairs:
            duplicates += 1
            continue
        seen_pairs.add((src, tgt))
        taken = key_classes.get(src, set()) | key_classes.get(tgt, set())
        colour = 0
        while colour in taken:
            colour += 1
        if colour == len(classes):
            classes.append([])
        classes[colour].append(int(row))
        key_classes.setdefault(src, set()).add(colour)
        key_classes.setdefault(tgt, set()).add(colour)
    return [np.sort(np.asarray(members, dtype=np.int64)) for members in classes], duplicates


__all__ = ["MIXED", "SRC", "BatchPlan", "GlobalBatch"]
