"""Hard negatives for the ``hard_negatives`` loss: per training pair, the teacher-nearest other targets.

Mining runs once, on the driver, over the teacher cache; the loop only reads the ``[pairs, k]`` index
array. A negative is never the pair's own translation nor a row whose target has the same text
(normalised, :func:`imascl_ray.data.normalise_text`) as the pair's target or source: the teacher would
rank such a row first, and the loss would then push a sentence away from its own translation.
"""

from __future__ import annotations

import numpy as np

from imascl_ray.config import Config
from imascl_ray.data import Corpus, normalise_text
from imascl_ray.errors import InputError


def wants_hard_negatives(config: Config) -> bool:
    """Whether the run's loss reads mined negatives."""
    return config.loss.name == "hard_negatives"


def mine_hard_negatives(
    train: Corpus, teacher_embeddings: np.ndarray, k: int, chunk: int = 2048
) -> np.ndarray:
    """``[len(train), k]`` row indices: per pair, the ``k`` pairs of its language pair whose target the
    teacher finds closest to its own target, nearest first, never one with the same text (see above).

    ``teacher_embeddings`` is indexed by sentence (``train.sentences()`` order). A language pair where
    some pair has fewer than ``k`` such candidates is an error naming it.
    """
    _, tgt_ids = train.sentence_ids()
    keys: dict[str, int] = {}
    tgt_key = np.fromiter((keys.setdefault(normalise_text(t), len(keys)) for t in train.tgt), np.int64)
    src_key = np.fromiter((keys.setdefault(normalise_text(s), len(keys)) for s in train.src), np.int64)
    negatives = np.empty((len(train), k), dtype=np.int64)
    for name, rows in train.group_indices().items():
        vectors = np.asarray(teacher_embeddings[tgt_ids[rows]], dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        for start in range(0, len(rows), chunk):
            block = rows[start : start + chunk]
            scores = vectors[start : start + chunk] @ vectors.T
            candidate = tgt_key[rows][None, :]
            same = (tgt_key[block][:, None] == candidate) | (src_key[block][:, None] == candidate)
            scores[same] = -np.inf
            allowed = (~same).sum(axis=1)
            if allowed.min() < k:
                worst = block[int(allowed.argmin())]
                raise InputError(
                    f"loss.hard_negatives: {name} has only {int(allowed.min())} other target(s) whose text "
                    f"differs from the pair {train.src[worst]!r} -> {train.tgt[worst]!r}, too few for {k} "
                    "negatives; lower loss.hard_negatives or add pairs"
                )
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
            negatives[block] = rows[np.take_along_axis(top, order, axis=1)]
    return negatives
