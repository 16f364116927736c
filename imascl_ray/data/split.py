"""Choosing pairs, capping each language pair, the train/validation split, and the contamination filter.

All sampling is deterministic from the seed, and per language pair: the generator of a pair is seeded
by ``(seed, crc32(pair name))``, so adding or removing another pair does not change this pair's sample.
The paper caps every pair at 25k and splits 20k train / 5k validation. :func:`split_for_run` holds out a
pair's test and validation rows from that pair's rows alone, so the validation rows of a language pair
are the same whatever pair set is trained (a sweep scores every trial on one validation set).

Text is compared after :func:`normalise_text` (Unicode NFKC, case folding, whitespace collapsed), so
``"Hello  World"`` and ``"hello world"`` count as the same sentence.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imascl_ray.data.corpus import Corpus
from imascl_ray.data.languages import pair_name, resolve_pair_set
from imascl_ray.errors import InputError


def normalise_text(text: str) -> str:
    """The comparison form of a sentence: NFKC, case-folded, runs of whitespace made one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def pair_rng(seed: int, name: str) -> np.random.Generator:
    """The random generator of one language pair: independent of every other pair."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def select_pairs(corpus: Corpus, pairs: str, languages: Sequence[str] | None = None) -> Corpus:
    """The rows of the language pairs a pair set names (``"en-xx"``, ``"all"``, ``"en-fr,en-ja"``).

    A requested pair matches the corpus's pair in either orientation (``fr-en`` finds ``en-fr`` rows,
    which keep their orientation). ``languages`` defaults to every language of the corpus. A requested
    pair the corpus lacks raises an error naming it and the pairs it has.
    """
    languages = list(languages) if languages is not None else corpus.languages()
    groups = corpus.group_indices()
    chosen: list[np.ndarray] = []
    for src, tgt in resolve_pair_set(pairs, languages):
        names = [name for name in (pair_name(src, tgt), pair_name(tgt, src)) if name in groups]
        if not names:
            raise InputError(
                f"pairs {pairs!r}: the corpus has no {pair_name(src, tgt)} pairs "
                f"(it has: {', '.join(groups) or 'none'})"
            )
        chosen.extend(groups[name] for name in names)
    return corpus.select(np.sort(np.concatenate(chosen)) if chosen else [])


def cap_per_pair(corpus: Corpus, cap: int | None, seed: int) -> Corpus:
    """At most ``cap`` rows of each language pair, drawn at random (seeded); row order kept."""
    if cap is None:
        return corpus
    if cap < 1:
        raise InputError(f"cap: must be a positive number of pairs, got {cap}")
    kept = []
    for name, rows in corpus.group_indices().items():
        if len(rows) > cap:
            rows = np.sort(pair_rng(seed, name).choice(rows, cap, replace=False))
        kept.append(rows)
    return corpus.select(np.sort(np.concatenate(kept)) if kept else [])


@dataclass
class Split:
    """A train/validation split; ``overlap_dropped`` training rows shared a sentence with validation."""

    train: Corpus
    validation: Corpus
    overlap_dropped: int = 0


def train_validation_split(
    corpus: Corpus, validation: int | float, seed: int, *, disjoint: bool = True
) -> Split:
    """Split every language pair into training and validation rows (deterministic by seed).

    Args:
        validation: validation rows per language pair: a count (``5000``) or a fraction (``0.2``).
        disjoint: drop training rows whose source or target sentence (normalised) is also in the
            validation split, so validation measures sentences never trained on.

    A validation split as large as (or larger than) a pair's data raises an error naming the pair.
    """
    if isinstance(validation, float) and not 0.0 < validation < 1.0:
        raise InputError(f"validation: a fraction must lie between 0 and 1, got {validation}")
    if isinstance(validation, int) and validation < 0:
        raise InputError(f"validation: must not be negative, got {validation}")
    train_rows, validation_rows = [], []
    for name, rows in corpus.group_indices().items():
        held, kept = _hold_out(rows, validation, seed, name, "validation")
        validation_rows.append(held)
        train_rows.append(kept)
    train = corpus.select(_merged(train_rows))
    held_out = corpus.select(_merged(validation_rows))
    dropped = 0
    if disjoint and len(held_out):
        before = len(train)
        train, _ = contamination_filter(train, {"validation": [*held_out.src, *held_out.tgt]})
        dropped = before - len(train)
    return Split(train, held_out, dropped)


def _hold_out(
    rows: np.ndarray, size: int | float, seed: int, name: str, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(held out, kept)`` row indices of one language pair: ``size`` rows (a count or a fraction) drawn
    by the pair's own generator, by position among ``rows``; both ascending."""
    count = round(size * len(rows)) if isinstance(size, float) else int(size)
    if count >= len(rows):
        raise InputError(
            f"{what}: {count} {what} pairs requested for {name}, which has only "
            f"{len(rows)} pairs (none would be left to train on)"
        )
    order = pair_rng(seed, name).permutation(rows)
    return np.sort(order[:count]), np.sort(order[count:])


def _merged(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)) if len(parts) else np.zeros(0, dtype=np.int64)


@dataclass
class RunSplit:
    """A run's rows: what it trains on, the validation that scores it, the test of what it trains."""

    train: Corpus
    validation: Corpus
    """The validation rows of every scored language pair."""
    test: Corpus | None
    """The test rows of every trained language pair; None when no test split was asked for."""
    validation_pairs: list[str]
    """The scored language pairs (names as in the corpus, sorted)."""
    overlap_dropped: int = 0
    """Training rows dropped for sharing a sentence with a held-out row."""


def split_for_run(
    corpus: Corpus,
    trained: Iterable[str],
    scored: Iterable[str],
    *,
    validation: int,
    test: int,
    seed: int,
) -> RunSplit:
    """Hold out each language pair's test and validation rows, then train on what no held-out row shares.

    Args:
        corpus: rows of (at least) every language pair of ``trained`` and ``scored``, already capped.
        trained: the language pairs the run trains on (names as in the corpus).
        scored: the language pairs whose validation rows score the run.
        validation, test: rows held out per language pair.

    Per pair, from its own rows alone: ``test`` rows (seed ``seed + 1``), then, among the rows that
    share no sentence with them, ``validation`` rows (seed ``seed``). So a pair's held-out rows are the
    same whatever else is chosen. The training rows are the other rows of the trained pairs, minus
    every row that shares a sentence (normalised) with any held-out row of any pair of either list:
    no run trains on the validation of a pair it is scored on, or of one another run is scored on.
    (Validation and test rows of one pair share no sentence; those of two pairs may, as gettext
    catalogues give en-fr and en-ja the same English: neither is ever trained on.)
    """
    trained, scored = sorted(set(trained)), sorted(set(scored))
    groups = corpus.group_indices()
    rest, held_validation, held_test = {}, {}, {}
    for name in sorted(set(trained) | set(scored)):
        rows = groups.get(name, np.zeros(0, dtype=np.int64))
        if test:
            held_test[name], rows = _hold_out(rows, test, seed + 1, name, "test")
            tested = {normalise_text(t) for i in held_test[name] for t in (corpus.src[i], corpus.tgt[i])}
            rows = np.asarray(
                [
                    i
                    for i in rows
                    if not {normalise_text(corpus.src[i]), normalise_text(corpus.tgt[i])} & tested
                ],
                dtype=np.int64,
            )
        held_validation[name], rest[name] = _hold_out(rows, validation, seed, name, "validation")
    train = corpus.select(_merged([rest[name] for name in trained]))
    held = [*held_validation.values(), *held_test.values()]
    held_out = corpus.select(_merged(held))
    before = len(train)
    if len(held_out):
        train, _ = contamination_filter(train, {"held out": [*held_out.src, *held_out.tgt]})
    return RunSplit(
        train=train,
        validation=corpus.select(_merged([held_validation[name] for name in scored])),
        test=corpus.select(_merged([held_test[name] for name in trained])) if test else None,
        validation_pairs=scored,
        overlap_dropped=before - len(train),
    )


@dataclass
class ContaminationReport:
    """How many training rows the filter dropped: in all, per language pair, per evaluation set."""

    dropped: int = 0
    by_pair: dict[str, int] = field(default_factory=dict)
    by_set: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = ", ".join(f"{name}: {count}" for name, count in self.by_pair.items())
        detail = f" ({parts})" if parts else ""
        return f"contamination filter dropped {self.dropped} training pair(s){detail}"


def contamination_filter(
    corpus: Corpus, evaluation: Mapping[str, Iterable[str]] | Iterable[str]
) -> tuple[Corpus, ContaminationReport]:
    """Drop every row whose source or target sentence (normalised) occurs in an evaluation set.

    Args:
        evaluation: ``{set name: sentences}``, or just the sentences (one set called ``"evaluation"``).

    Returns the kept rows and a report of what was dropped (``by_set`` counts a row once per set it hits).
    """
    sets = dict(evaluation) if isinstance(evaluation, Mapping) else {"evaluation": evaluation}
    owners: dict[str, set[str]] = {}
    for set_name, sentences in sets.items():
        for sentence in sentences:
            owners.setdefault(normalise_text(sentence), set()).add(set_name)
    keep, by_pair, by_set = [], Counter(), Counter()
    for index, (src, tgt, name) in enumerate(zip(corpus.src, corpus.tgt, corpus.pair_names(), strict=True)):
        hits = owners.get(normalise_text(src), set()) | owners.get(normalise_text(tgt), set())
        if hits:
            by_pair[name] += 1
            by_set.update(hits)
        else:
            keep.append(index)
    report = ContaminationReport(
        len(corpus) - len(keep), dict(sorted(by_pair.items())), dict(sorted(by_set.items()))
    )
    return corpus.select(keep), report


def read_evaluation_sentences(path: str | Path) -> list[str]:
    """Sentences of an evaluation set: both sides of a corpus file, or a ``.txt`` file (one a line)."""
    from imascl_ray.data.corpus_files import FORMATS, read_corpus, read_utf8_text

    path = Path(path)
    if path.suffix.lower() in FORMATS:
        corpus = read_corpus(path)
        return [*corpus.src, *corpus.tgt]
    if path.suffix.lower() != ".txt":
        raise InputError(f"{path}: an evaluation set is a corpus file ({', '.join(FORMATS)}) or .txt")
    if not path.is_file():
        raise InputError(f"{path}: no such evaluation file")
    return [line.strip() for line in read_utf8_text(path).splitlines() if line.strip()]
