"""The texts of a rank's hard negatives: mined neighbours, never a text of the batch they join.

Mining (:mod:`imascl_ray.preparation.mining`) gives every training pair the rows of its language pair whose
targets the teacher finds closest to its own. A negative joins every row's softmax of the global batch
with label 0, so a negative whose text is any sentence of the batch (a translation there, or the same
words) would push a positive away. The check is by normalised text (as the batch plan compares
sentences), not by row: two rows may hold the same sentence. Where fewer than ``k`` mined neighbours
remain, the rest are drawn at random (seeded by step and row) from the pair's language pair.
"""

from __future__ import annotations

import numpy as np

from imascl_ray.data import Corpus
from imascl_ray.data.split import normalise_text
from imascl_ray.errors import InputError


class HardNegativeTexts:
    """Picks ``k`` negative target texts per pair of a rank's slice; see the module docstring.

    Args:
        corpus: the training corpus the batch plan and the mined rows index.
        mined: ``[len(corpus), m]`` row indices of each pair's mined neighbours, nearest first.
        k: negatives per pair (``loss.hard_negatives``).
        seed: the run's seed, for the random fill-up.
    """

    def __init__(self, corpus: Corpus, mined: np.ndarray, k: int, seed: int) -> None:
        if mined.shape[0] != len(corpus):
            raise ValueError(f"mined hard negatives cover {mined.shape[0]} pairs, the corpus {len(corpus)}")
        self.corpus, self.mined, self.k, self.seed = corpus, mined, k, int(seed)
        keys: dict[str, int] = {}
        self._src_key = np.array([keys.setdefault(normalise_text(s), len(keys)) for s in corpus.src])
        self._tgt_key = np.array([keys.setdefault(normalise_text(t), len(keys)) for t in corpus.tgt])
        self._group_rows = corpus.group_indices()
        self._group_of = np.empty(len(corpus), dtype=object)
        for name, rows in self._group_rows.items():
            self._group_of[rows] = name

    def rows(self, batch_rows: np.ndarray, local_rows: np.ndarray, step: int) -> list[int]:
        """Corpus rows of the negatives of each of ``local_rows`` (``k`` each, in order)."""
        taken = set(self._src_key[batch_rows].tolist()) | set(self._tgt_key[batch_rows].tolist())
        chosen: list[int] = []
        for row in local_rows:
            keys = set(taken)
            picks = self._first(self.mined[row], keys, self.k)
            if len(picks) < self.k:
                picks += self._fill(int(row), step, keys, self.k - len(picks))
            chosen.extend(picks)
        return chosen

    def texts(self, batch_rows: np.ndarray, local_rows: np.ndarray, step: int) -> list[str]:
        """The target texts of :meth:`rows`."""
        return [self.corpus.tgt[row] for row in self.rows(batch_rows, local_rows, step)]

    def _first(self, candidates, keys: set[int], count: int) -> list[int]:
        """The first ``count`` candidate rows whose target is no sentence in ``keys`` (nor each other's)."""
        picks: list[int] = []
        for candidate in candidates:
            key = int(self._tgt_key[candidate])
            if key not in keys:
                keys.add(key)
                picks.append(int(candidate))
                if len(picks) == count:
                    break
        return picks

    def _fill(self, row: int, step: int, keys: set[int], count: int) -> list[int]:
        group = self._group_of[row]
        rng = np.random.default_rng([self.seed, step, row])
        picks = self._first(rng.permutation(self._group_rows[group]), keys, count)
        if len(picks) < count:
            raise InputError(
                f"loss.hard_negatives: {group} has too few sentences outside a global batch for "
                f"{self.k} negatives per pair"
            )
        return picks
