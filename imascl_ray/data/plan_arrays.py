"""The batch plan in integer arrays: the same conflict classes and batches as :class:`BatchPlan`, vectorised.

:class:`~imascl_ray.data.batch_plan.BatchPlan` visits the rows one by one in Python (dicts and sets per
sentence), which costs about 1 KB a pair and 9 s per million pairs. This module computes the same plan
from integer arrays alone, so a corpus of 10^7 pairs costs a few arrays of 10^7 integers:

- **sentence keys** (:func:`sentence_keys`): the normalised text of every sentence hashed to 64 bits
  (BLAKE2b), in chunks. Equal normalised texts get equal keys, as in ``BatchPlan``; two different
  sentences share a key only by a hash collision (about ``k^2 / 2^65`` for ``k`` sentences: 10^-5 at
  2 x 10^7), which can only put two rows in different classes, never two copies of a sentence in one batch;
- **conflict classes** (:func:`conflict_classes`): the same first-fit colouring in the same seeded
  order, computed by rounds (a row joins the class once every earlier row sharing one of its keys is
  decided: it is the first undecided holder of each of its keys), which gives exactly the sequential
  result; a corpus whose sentences are all distinct needs one round;
- **epoch batches** (:func:`epoch_batches`): the same generator calls as ``BatchPlan.epoch_batches``,
  as one ``[steps, G]`` array.

Same seed, same corpus: the same batches as ``BatchPlan`` (``tests/test_streaming.py`` checks it), barring
a hash collision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from imascl_ray.data.split import normalise_text

KEY_CHUNK = 200_000
"""Sentences hashed per chunk: the transient Python strings of one chunk, not of the corpus."""


def sentence_keys(sentences: Iterable[str], count: int) -> np.ndarray:
    """``(count,)`` uint64 keys of the normalised ``sentences`` (see the module docstring)."""
    keys = np.empty(count, dtype=np.uint64)
    iterator = iter(sentences)
    done = 0
    while done < count:
        chunk = [next(iterator) for _ in range(min(KEY_CHUNK, count - done))]
        digests = b"".join(
            hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=8).digest() for text in chunk
        )
        keys[done : done + len(chunk)] = np.frombuffer(digests, dtype=np.uint64)
        done += len(chunk)
    return keys


def _first_holder(keys: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """For each entry, the smallest position among the entries with the same key."""
    order = np.lexsort((positions, keys))
    sorted_keys = keys[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group = np.cumsum(starts) - 1
    first = positions[order][starts][group]
    out = np.empty_like(positions)
    out[order] = first
    return out


def _greedy_class(candidates: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequential greedy choice over ``candidates`` (visit positions, ascending): a row joins when no
    earlier joined row holds one of its keys ``a[pos]``, ``b[pos]``. Returns (joined, the rest)."""
    unresolved = candidates
    joined: list[np.ndarray] = []
    rejected: list[np.ndarray] = []
    while len(unresolved):
        ka, kb = a[unresolved], b[unresolved]
        first = _first_holder(np.concatenate([ka, kb]), np.concatenate([unresolved, unresolved]))
        n = len(unresolved)
        ready = (first[:n] == unresolved) & (first[n:] == unresolved)
        taken = np.unique(np.concatenate([ka[ready], kb[ready]]))
        blocked = ~ready & (np.isin(ka, taken) | np.isin(kb, taken))
        joined.append(unresolved[ready])
        rejected.append(unresolved[blocked])
        unresolved = unresolved[~ready & ~blocked]
    return np.sort(np.concatenate(joined)), np.sort(np.concatenate(rejected))


def conflict_classes(
    rows: np.ndarray, src_keys: np.ndarray, tgt_keys: np.ndarray, rng: np.random.Generator
) -> tuple[list[np.ndarray], int]:
    """``BatchPlan``'s colouring of ``rows``: classes free of repeated keys, and the duplicates dropped.

    Rows are visited in ``rng.permutation(rows)`` order; an exact duplicate (same two keys as an
    earlier visited row) is dropped, every other row joins the first class holding neither of its keys.
    Returns the classes (sorted row indices, class 0 first) and the number of duplicates.
    """
    visit = rng.permutation(rows)
    a, b = src_keys[visit], tgt_keys[visit]
    by_pair = np.lexsort((b, a))  # stable: equal pairs stay in visit order, the first one first
    starts = np.ones(len(by_pair), dtype=bool)
    starts[1:] = (a[by_pair][1:] != a[by_pair][:-1]) | (b[by_pair][1:] != b[by_pair][:-1])
    remaining = np.sort(by_pair[starts])
    duplicates = len(visit) - len(remaining)
    classes: list[np.ndarray] = []
    while len(remaining):
        joined, remaining = _greedy_class(remaining, a, b)
        classes.append(np.sort(visit[joined]))
    return classes, duplicates


@dataclass
class PlanClasses:
    """The usable conflict classes of every pool (language pair, or ``"mixed"``), and what was left out."""

    classes: dict[str, list[np.ndarray]]
    duplicates_removed: int
    unused_rows: int
    skipped_pairs: list[str]

    def steps_per_epoch(self, global_batch_size: int) -> int:
        return sum(len(m) // global_batch_size for members in self.classes.values() for m in members)


def plan_classes(
    pools: dict[str, np.ndarray],
    src_keys: np.ndarray,
    tgt_keys: np.ndarray,
    global_batch_size: int,
    colouring_rng: np.random.Generator,
) -> PlanClasses:
    """The classes of every pool, in the pools' order (as ``BatchPlan`` visits them)."""
    kept: dict[str, list[np.ndarray]] = {}
    duplicates = unused = 0
    skipped: list[str] = []
    for name, rows in pools.items():
        classes, dropped = conflict_classes(rows, src_keys, tgt_keys, colouring_rng)
        duplicates += dropped
        usable = [members for members in classes if len(members) >= global_batch_size]
        unused += sum(len(members) for members in classes if len(members) < global_batch_size)
        if usable:
            kept[name] = usable
        else:
            skipped.append(name)
    return PlanClasses(kept, duplicates, unused, skipped)


def epoch_batches(
    classes: dict[str, list[np.ndarray]], global_batch_size: int, seed: int, epoch: int
) -> np.ndarray:
    """``[steps, G]`` row indices of ``epoch``'s batches in step order: ``BatchPlan.epoch_batches``."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    parts: list[np.ndarray] = []
    for name in sorted(classes):
        for members in classes[name]:
            shuffled = rng.permutation(members)
            count = len(shuffled) // global_batch_size
            parts.append(shuffled[: count * global_batch_size].reshape(count, global_batch_size))
    stacked = np.concatenate(parts) if parts else np.empty((0, global_batch_size), dtype=np.int64)
    return stacked[rng.permutation(len(stacked))]


def pool_rows(pair_codes: np.ndarray, names: Sequence[str], mixed: bool) -> dict[str, np.ndarray]:
    """Pool name -> row indices (ascending): every row in ``"mixed"``, else one pool per language pair
    (sorted by name, as :meth:`Corpus.group_indices`)."""
    if mixed:
        return {"mixed": np.arange(len(pair_codes), dtype=np.int64)}
    order = sorted(range(len(names)), key=lambda code: names[code])
    pools = {names[code]: np.flatnonzero(pair_codes == code) for code in order}
    return {name: rows for name, rows in pools.items() if len(rows)}
