"""A run's corpus, from ``data.corpus`` to its train / validation / test rows (no Ray, no torch here).

The corpus is loaded (a file, the hub, or this machine's gettext catalogues, cached as Parquet), cut to
the language pairs the run trains on (``data.pair_set``) and those that score it
(``data.validation_pair_set``), cleaned of evaluation sentences (``data.exclude``), capped per pair and
split by :func:`imascl_ray.data.split_for_run`: a pair's held-out rows depend on that pair alone, so
every trial of a sweep over pair sets is scored on the same validation rows, and none trains on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from imascl_ray.config import Config
from imascl_ray.data import (
    Corpus,
    RunSplit,
    cap_per_pair,
    contamination_filter,
    load_hub_corpus,
    read_corpus,
    resolve_priority,
    select_pairs,
    split_for_run,
    write_corpus,
)
from imascl_ray.data.split import read_evaluation_sentences
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)


def load_source_corpus(config: Config, cache_dir: Path) -> Corpus:
    """The corpus ``data.corpus`` names: a file, ``hub:<dataset>``, or ``gettext`` (cached as Parquet)."""
    source = config.data.corpus
    if source == "gettext":
        from imascl_ray.data.gettext_corpus import cached_gettext_corpus

        # The system catalogues only: Python packages' catalogues (django, sphinx) are the out-of-domain
        # held-out set (imascl_ray.data.out_of_domain), never training data.
        return cached_gettext_corpus(config.data.languages, cache_dir, python_packages=False)
    if source.startswith("hub:"):
        return load_hub_corpus(source.removeprefix("hub:"))
    return read_corpus(source)


def split_corpus(config: Config, corpus: Corpus) -> tuple[RunSplit, list[str]]:
    """The run's :class:`~imascl_ray.data.RunSplit` and its language priority, by the data section."""
    data = config.data
    trained = select_pairs(corpus, data.pair_set, data.languages)
    priority = resolve_priority(data.priority, trained.src_lang, trained.tgt_lang)
    trained_pairs = list(trained.group_indices())
    scored_pairs = trained_pairs
    if data.validation_pair_set is not None:
        try:
            scored = select_pairs(corpus, data.validation_pair_set, data.languages)
        except InputError as error:
            raise InputError(f"data.validation_pair_set: {error}") from None
        scored_pairs = list(scored.group_indices())
    wanted = set(trained_pairs) | set(scored_pairs)
    corpus = corpus.select(i for i, name in enumerate(corpus.pair_names()) if name in wanted)
    if data.exclude:
        sets = {path: read_evaluation_sentences(path) for path in data.exclude}
        corpus, report = contamination_filter(corpus, sets)
        logger.info("contamination filter: %s", report.summary())
    held = data.validation_pairs + data.test_pairs
    corpus = cap_per_pair(corpus, data.max_pairs_per_language_pair + held, data.seed)
    split = split_for_run(
        corpus,
        trained_pairs,
        scored_pairs,
        validation=data.validation_pairs,
        test=data.test_pairs,
        seed=data.seed,
    )
    return split, priority


def write_splits(split: RunSplit, data_dir: Path) -> dict[str, Path]:
    """``train`` / ``validation`` (/ ``test``) Parquet files under ``data_dir``; their paths by name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    paths = {name: data_dir / f"{name}.parquet" for name, part in parts.items() if part is not None}
    for name, path in paths.items():
        write_corpus(parts[name], path)
    counts = ", ".join(f"{name} {count}" for name, count in split.train.pair_counts().items())
    logger.info(
        "[prepare] train %d pairs (%s); validation %d over %s; test %d",
        len(split.train),
        counts,
        len(split.validation),
        ", ".join(split.validation_pairs),
        len(split.test) if split.test is not None else 0,
    )
    return paths
