"""A deterministic, model-free sentence encoder: hashed character n-grams through a fixed projection.

It needs no weights and no hub, and it is the same on every machine, so tests, benchmarks and smoke
runs of the evaluation code can use it where a real model would be slow or absent. Sentences sharing
many character n-grams (numbers, names, cognates) land close, which makes retrieval non-trivial but
far from perfect. It implements the small interface the evaluation code needs from an encoder:
``encode(texts) -> Tensor[n, d]`` and the attributes ``name``, ``revision``, ``prefix``,
``embedding_dim``.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence


class HashingEncoder:
    """Embeds a text as ``normalise(counts(char n-grams, hashed into buckets) @ P)``.

    ``P`` is a Gaussian ``[buckets, dim]`` matrix drawn from ``seed``; n-grams are hashed with CRC-32,
    so the result does not depend on Python's hash randomisation. ``prefix`` is prepended to every
    text, like an e5 ``query: `` prefix.
    """

    def __init__(
        self,
        dim: int = 64,
        *,
        buckets: int = 2048,
        ngram: tuple[int, int] = (1, 3),
        seed: int = 0,
        prefix: str = "",
        name: str = "imascl-ray/hashing-encoder",
    ) -> None:
        self.embedding_dim = dim
        self.buckets = buckets
        self.ngram = ngram
        self.prefix = prefix
        self.name = name
        self.revision = f"hash-d{dim}-b{buckets}-n{ngram[0]}{ngram[1]}-s{seed}"
        self.calls = 0
        self._projection = torch.from_numpy(
            np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)
        )

    def _counts(self, text: str) -> np.ndarray:
        counts = np.zeros(self.buckets, dtype=np.float32)
        padded = f" {self.prefix}{text} "
        for size in range(self.ngram[0], self.ngram[1] + 1):
            for start in range(max(len(padded) - size + 1, 0)):
                counts[zlib.crc32(padded[start : start + size].encode("utf-8")) % self.buckets] += 1
        return counts

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False
    ) -> torch.Tensor:
        """``[n, dim]`` unit-length float32 embeddings, in input order."""
        self.calls += 1
        if len(texts) == 0:
            return torch.empty((0, self.embedding_dim))
        counts = torch.from_numpy(np.stack([self._counts(text) for text in texts]))
        return torch.nn.functional.normalize(counts @ self._projection, dim=1)
