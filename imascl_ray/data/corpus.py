"""The parallel corpus: a columnar table of pairs ``(src_lang, tgt_lang, src, tgt, provenance)``.

Columns are plain Python lists (one per field), so 250k pairs cost a few lists, not 250k objects, and
selecting rows is one list comprehension per column. A :class:`Corpus` is treated as immutable: every
operation returns a new one, which lets it cache its unique-sentence table.

``sentences()`` is the unique sentences of both sides, sorted (code-point order), so the list depends
only on the corpus content, not on row order: a teacher-embedding cache keyed by sentence index (and
fingerprinted by :meth:`Corpus.sentences_fingerprint`) stays valid for the same content.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from imascl_ray.data.languages import pair_name

COLUMNS = ("src_lang", "tgt_lang", "src", "tgt")
PROVENANCE = "provenance"


@dataclass(frozen=True)
class Pair:
    """One row of a corpus, for code that wants records (iteration, tests); storage is columnar."""

    src_lang: str
    tgt_lang: str
    src: str
    tgt: str
    provenance: str = ""

    @property
    def language_pair(self) -> str:
        return pair_name(self.src_lang, self.tgt_lang)


class Corpus:
    """Aligned pairs of sentences with their languages and where they came from.

    Args:
        src_lang, tgt_lang, src, tgt: equally long sequences, one entry per pair (row).
        provenance: where each pair came from (a catalogue, a dataset); empty strings if not given.
        dropped: counts of rows a reader dropped, by reason (``{"empty": 3}``), for reports.
    """

    def __init__(
        self,
        src_lang: Sequence[str],
        tgt_lang: Sequence[str],
        src: Sequence[str],
        tgt: Sequence[str],
        provenance: Sequence[str] | None = None,
        dropped: Mapping[str, int] | None = None,
    ) -> None:
        self.src_lang = list(src_lang)
        self.tgt_lang = list(tgt_lang)
        self.src = list(src)
        self.tgt = list(tgt)
        self.provenance = list(provenance) if provenance is not None else [""] * len(self.src)
        lengths = {len(self.src_lang), len(self.tgt_lang), len(self.src), len(self.tgt), len(self.provenance)}
        if len(lengths) != 1:
            raise ValueError(f"corpus columns differ in length: {sorted(lengths)}")
        self.dropped = dict(dropped or {})
        self._sentence_table: tuple[list[str], np.ndarray, np.ndarray] | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair | Sequence[str]]) -> Corpus:
        """From ``Pair`` records or ``(src_lang, tgt_lang, src, tgt[, provenance])`` tuples."""
        columns: list[list[str]] = [[], [], [], [], []]
        for pair in pairs:
            values = (
                (pair.src_lang, pair.tgt_lang, pair.src, pair.tgt, pair.provenance)
                if isinstance(pair, Pair)
                else (*pair, "")[:5]
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        return cls(*columns)

    @classmethod
    def from_groups(
        cls, groups: Mapping[str, tuple[Sequence[str], Sequence[str]]], provenance: str = ""
    ) -> Corpus:
        """From ``{"en-fr": (sources, targets), ...}`` (the shape :meth:`groups` returns)."""
        from imascl_ray.data.languages import split_pair

        columns: list[list[str]] = [[], [], [], []]
        for name, (sources, targets) in groups.items():
            src_lang, tgt_lang = split_pair(name)
            if len(sources) != len(targets):
                raise ValueError(f"group {name}: {len(sources)} sources but {len(targets)} targets")
            columns[0].extend([src_lang] * len(sources))
            columns[1].extend([tgt_lang] * len(sources))
            columns[2].extend(sources)
            columns[3].extend(targets)
        return cls(*columns, provenance=[provenance] * len(columns[2]))

    @classmethod
    def concat(cls, corpora: Iterable[Corpus]) -> Corpus:
        """The rows of several corpora, one after the other."""
        corpora = list(corpora)
        dropped: Counter[str] = Counter()
        for corpus in corpora:
            dropped.update(corpus.dropped)
        return cls(
            *(
                [value for corpus in corpora for value in getattr(corpus, name)]
                for name in (*COLUMNS, PROVENANCE)
            ),
            dropped=dropped,
        )

    # ---- rows ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.src)

    def __iter__(self) -> Iterator[Pair]:
        for row in zip(self.src_lang, self.tgt_lang, self.src, self.tgt, self.provenance, strict=True):
            yield Pair(*row)

    def __getitem__(self, index: int) -> Pair:
        return Pair(
            self.src_lang[index],
            self.tgt_lang[index],
            self.src[index],
            self.tgt[index],
            self.provenance[index],
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}: {count}" for name, count in self.pair_counts().items())
        return f"Corpus({len(self)} pairs; {counts})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Corpus):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in (*COLUMNS, PROVENANCE))

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside: not hashable

    def select(self, indices: Iterable[int]) -> Corpus:
        """The rows at ``indices``, in that order (a new corpus)."""
        indices = [int(i) for i in indices]
        return Corpus(
            *(
                [column[i] for i in indices]
                for column in (self.src_lang, self.tgt_lang, self.src, self.tgt, self.provenance)
            ),
            dropped=self.dropped,
        )

    def pair_names(self) -> list[str]:
        """The language-pair name of every row (``"en-fr"``)."""
        return [f"{s}-{t}" for s, t in zip(self.src_lang, self.tgt_lang, strict=True)]

    def pair_counts(self) -> dict[str, int]:
        """Rows per language pair, pairs sorted by name."""
        counts = Counter(self.pair_names())
        return {name: counts[name] for name in sorted(counts)}

    def languages(self) -> list[str]:
        """Every language of the corpus, most frequent first (ties by code)."""
        from imascl_ray.data.languages import volume_priority

        return volume_priority([*self.src_lang, *self.tgt_lang])

    def group_indices(self) -> dict[str, np.ndarray]:
        """Language pair -> the row indices of its pairs (ascending), pairs sorted by name."""
        rows: dict[str, list[int]] = {}
        for index, name in enumerate(self.pair_names()):
            rows.setdefault(name, []).append(index)
        return {name: np.asarray(rows[name], dtype=np.int64) for name in sorted(rows)}

    def groups(self) -> dict[str, tuple[list[str], list[str]]]:
        """Language pair -> (source sentences, target sentences), aligned by position, in row order."""
        return {
            name: ([self.src[i] for i in rows], [self.tgt[i] for i in rows])
            for name, rows in self.group_indices().items()
        }

    # ---- the unique-sentence table ------------------------------------------------------------
    def _sentences(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        if self._sentence_table is None:
            unique = sorted(set(self.src) | set(self.tgt))
            position = {sentence: index for index, sentence in enumerate(unique)}
            src_ids = np.fromiter((position[s] for s in self.src), dtype=np.int64, count=len(self))
            tgt_ids = np.fromiter((position[t] for t in self.tgt), dtype=np.int64, count=len(self))
            self._sentence_table = (unique, src_ids, tgt_ids)
        return self._sentence_table

    def sentences(self) -> list[str]:
        """The unique sentences of both sides, sorted: a stable order that depends only on the content.

        :meth:`sentence_ids` gives each row's position of its source and target in this list.
        """
        return list(self._sentences()[0])

    def sentence_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the index of its source and of its target sentence in :meth:`sentences`."""
        _, src_ids, tgt_ids = self._sentences()
        return src_ids.copy(), tgt_ids.copy()

    def group_sentence_ids(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per language pair, the sentence indices of its sources and targets, aligned with :meth:`groups`."""
        src_ids, tgt_ids = self.sentence_ids()
        return {name: (src_ids[rows], tgt_ids[rows]) for name, rows in self.group_indices().items()}

    def sentences_fingerprint(self) -> str:
        """A SHA-256 of the unique-sentence list: the same for the same sentences, whatever the row order."""
        digest = hashlib.sha256()
        for sentence in self._sentences()[0]:
            digest.update(sentence.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """A SHA-256 of every row (languages, sentences, provenance) in order."""
        digest = hashlib.sha256()
        for row in zip(self.src_lang, self.tgt_lang, self.src, self.tgt, self.provenance, strict=True):
            digest.update("\t".join(row).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()
