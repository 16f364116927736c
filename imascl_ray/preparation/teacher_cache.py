"""The teacher cache of a run or of a sweep: every training sentence embedded once by the frozen teacher.

:func:`build_teacher_cache` embeds a sentence list into a fingerprinted, memory-mapped
:class:`~imascl_ray.teacher.TeacherCache` under ``teacher.cache_dir``, either in this process or, with
``teacher.workers``, on a pool of Ray Data actors that each hold the teacher
(:mod:`imascl_ray.preparation.teacher_pool`, imported only then). A sweep over pair sets builds one cache
over the union of its variants' training sentences (:func:`build_shared_teacher_cache`); each trial
then looks its own sentences up in it (:class:`SharedTeacherCache`) instead of running the teacher.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imascl_ray.config import Config
from imascl_ray.errors import InputError
from imascl_ray.preparation.splits import load_source_corpus, split_corpus
from imascl_ray.preparation.student import resolve_model

logger = logging.getLogger(__name__)

SHARED_SENTENCES_FILE = "teacher-sentences.json"


def teacher_name(config: Config) -> str:
    """The teacher's hub id or folder: ``teacher.name``, else the student's starting checkpoint."""
    return resolve_model(config.teacher.name or config.model.name)


def cache_folder(config: Config) -> Path:
    """``teacher.cache_dir``, else ``<output_dir>/cache/teacher`` (shared by the runs of one output)."""
    if config.teacher.cache_dir:
        return Path(config.teacher.cache_dir)
    return Path(config.tracking.output_dir).resolve() / "cache" / "teacher"


def teacher_pool_size(config: Config) -> int:
    """How many Ray Data actors embed the cache; 0: this process does (see ``teacher.workers``).

    ``None`` (auto) means one actor per GPU when this process is joined to a Ray cluster with GPUs, and
    0 otherwise; Ray is only consulted if something already imported and started it.
    """
    workers = config.teacher.workers
    if workers is not None and workers < 0:
        raise InputError(f"teacher.workers must not be negative, got {workers}")
    if workers is not None:
        return workers
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return 0
    return int(ray.cluster_resources().get("GPU", 0))


def build_teacher_cache(config: Config, sentences: Sequence[str], *, progress: bool = True):
    """The :class:`~imascl_ray.teacher.TeacherCache` of ``sentences`` under the config's teacher
    settings: reused when its fingerprint exists, resumed from its finished shards when a build was
    interrupted, else embedded (in process, or on ``teacher.workers`` Ray Data actors)."""
    from imascl_ray.teacher import Teacher, TeacherCache

    name = teacher_name(config)
    settings = config.teacher
    teacher = Teacher.from_pretrained(
        name, pooling=settings.pooling, prefix=settings.prefix, max_length=settings.max_length
    )
    workers = teacher_pool_size(config)
    embedder = None
    if workers:
        from imascl_ray.preparation.teacher_pool import RayDataEmbedder

        embedder = RayDataEmbedder(workers, cpus_per_worker=settings.cpus_per_worker)
    where = f"{workers} Ray Data actor(s)" if workers else "this process"
    logger.info("[prepare] teacher %s: embedding %d sentences in %s (cached)", name, len(sentences), where)
    return TeacherCache.build(
        teacher,
        sentences,
        cache_folder(config),
        batch_size=settings.batch_size,
        show_progress=progress,
        embedder=embedder,
    )


@dataclass
class SharedTeacherCache:
    """A teacher cache over a superset of a run's training sentences, and the sentence of each row.

    Built once by :func:`build_shared_teacher_cache` (a Tune sweep over several pair sets); every trial's
    :func:`~imascl_ray.preparation.prepare_run` looks its own training sentences up in it.
    """

    cache: str
    """The :class:`~imascl_ray.teacher.TeacherCache` folder."""
    sentences: str
    """A JSON list: the sentence of every cache row, in row order."""

    def rows_for(self, sentences: list[str]) -> np.ndarray:
        """The cache row of each of ``sentences``; an error names the first sentence it lacks."""
        index = {sentence: row for row, sentence in enumerate(json.loads(Path(self.sentences).read_text()))}
        rows = np.empty(len(sentences), dtype=np.int64)
        for position, sentence in enumerate(sentences):
            row = index.get(sentence)
            if row is None:
                raise InputError(
                    f"{self.cache}: the shared teacher cache lacks the training sentence {sentence!r}; "
                    "was the run's data section changed after the cache was built?"
                )
            rows[position] = row
        return rows


def build_shared_teacher_cache(variants: Mapping[str, Config], directory: str | Path) -> SharedTeacherCache:
    """One teacher cache over the union of the training sentences of several configs.

    ``variants`` maps a label (where the variant comes from, for error messages: e.g. a search-space
    line and value) to a config; they must agree on the teacher (name and settings) and on the corpus
    source, and may differ in their data section (pair set, caps, splits). Every variant's corpus is
    split exactly as :func:`~imascl_ray.preparation.prepare_run` will split it, so a pair set the
    corpus lacks is reported here, with its label, before any training starts. The sentence list goes
    to ``directory/teacher-sentences.json``.
    """
    if not variants:
        raise ValueError("build_shared_teacher_cache needs at least one config")
    first = next(iter(variants.values()))
    settings = {
        label: (teacher_name(c), c.teacher.pooling, c.teacher.prefix, c.teacher.max_length, c.data.corpus)
        for label, c in variants.items()
    }
    if len(set(settings.values())) > 1:
        raise InputError(
            "the runs of one sweep share one teacher cache, so they must share the teacher and the corpus: "
            + "; ".join(f"{label}: {value}" for label, value in settings.items())
        )
    source = load_source_corpus(first, Path(first.tracking.output_dir).resolve() / "cache")
    union: set[str] = set()
    for label, config in variants.items():
        try:
            split, _ = split_corpus(config, source)
        except InputError as error:
            raise InputError(f"{label}: {error}") from None
        union.update(split.train.sentences())
        logger.info("[prepare] %s: %d training pairs", label, len(split.train))
    sentences = sorted(union)
    logger.info("[prepare] one teacher cache over the sentences of %d variants", len(variants))
    cache = build_teacher_cache(first, sentences)
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    sentences_file = directory / SHARED_SENTENCES_FILE
    sentences_file.write_text(json.dumps(sentences, ensure_ascii=False) + "\n", encoding="utf-8")
    return SharedTeacherCache(cache=str(cache.directory), sentences=str(sentences_file))
