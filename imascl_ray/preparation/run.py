"""``prepare_run``: the four preparation jobs in order, and the :class:`PreparedRun` they leave behind."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imascl_ray.config import Config
from imascl_ray.preparation.mining import mine_hard_negatives, wants_hard_negatives
from imascl_ray.preparation.splits import load_source_corpus, split_corpus, write_splits
from imascl_ray.preparation.stream import prepare_stream
from imascl_ray.preparation.student import prepare_student
from imascl_ray.preparation.teacher_cache import SharedTeacherCache, build_teacher_cache, teacher_name

logger = logging.getLogger(__name__)

PREPARED_FILE = "prepared.json"


@dataclass
class PreparedRun:
    """Paths and facts the workers need; written to ``<run dir>/prepared.json``."""

    directory: str
    train: str
    validation: str
    test: str | None
    student: str
    teacher: str
    teacher_cache: str
    priority: list[str]
    hard_negatives: str | None = None
    teacher_rows: str | None = None
    """``.npy``: per training sentence (``Corpus.sentences()`` order), its row in ``teacher_cache``.
    None: the cache holds exactly the training sentences, row ``i`` for sentence ``i``."""
    validation_pairs: list[str] = field(default_factory=list)
    """The language pairs whose validation rows (the ``validation`` file) score the run
    (``data.validation_pair_set``, else ``data.pair_set``)."""
    stream: str | None = None
    """The stream folder (:mod:`imascl_ray.data.stream`): the batch plan and training rows the workers
    memory-map. None (a run prepared before it existed): each worker reads ``train`` and plans alone."""

    def save(self) -> Path:
        path = Path(self.directory) / PREPARED_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PreparedRun:
        return cls(**json.loads((Path(directory) / PREPARED_FILE).read_text()))


def prepare_run(
    config: Config, directory: str | Path, *, shared_teacher: SharedTeacherCache | None = None
) -> PreparedRun:
    """Everything a run needs before its workers start, into ``directory``; workers then only read files.

    In order, each job in its module: the corpus split into train / validation / test files
    (:mod:`~imascl_ray.preparation.splits`), the student's starting checkpoint
    (:mod:`~imascl_ray.preparation.student`), the teacher cache of the training sentences
    (:mod:`~imascl_ray.preparation.teacher_cache`), and for the ``hard_negatives`` loss the mined
    negatives (:mod:`~imascl_ray.preparation.mining`); last, the stream folder
    the workers read their batches and rows from (:mod:`~imascl_ray.preparation.stream`). With
    ``shared_teacher`` the teacher does not run: the training sentences are looked up in that cache and
    their rows saved as ``data/teacher_rows.npy``.
    """
    from imascl_ray.teacher import TeacherCache

    directory = Path(directory).resolve()
    data_dir = directory / "data"
    logger.info("[prepare] corpus %s", config.data.corpus)
    source = load_source_corpus(config, Path(config.tracking.output_dir).resolve() / "cache")
    split, priority = split_corpus(config, source)
    paths = write_splits(split, data_dir)

    student = prepare_student(config.model, split, directory)

    teacher_rows = None
    sentences = split.train.sentences()
    if shared_teacher is not None:
        logger.info("[prepare] teacher: the shared cache %s", shared_teacher.cache)
        cache = TeacherCache.open(shared_teacher.cache, reused=True)
        rows = shared_teacher.rows_for(sentences)
        teacher_rows = str(data_dir / "teacher_rows.npy")
        np.save(teacher_rows, rows)
        embeddings = np.asarray(cache.embeddings[rows]) if wants_hard_negatives(config) else None
    else:
        cache = build_teacher_cache(config, sentences)
        embeddings = cache.embeddings

    stream = prepare_stream(
        config,
        split.train,
        list(priority),
        data_dir,
        cache_fingerprint=cache.fingerprint,
        cache_rows=len(cache),
        teacher_rows=None if teacher_rows is None else np.load(teacher_rows),
    )

    hard_negatives = None
    if wants_hard_negatives(config):
        hard_negatives = str(data_dir / "hard_negatives.npy")
        np.save(hard_negatives, mine_hard_negatives(split.train, embeddings, config.loss.hard_negatives))

    prepared = PreparedRun(
        directory=str(directory),
        train=str(paths["train"]),
        validation=str(paths["validation"]),
        test=str(paths["test"]) if "test" in paths else None,
        student=student,
        teacher=teacher_name(config),
        teacher_cache=str(cache.directory),
        priority=list(priority),
        hard_negatives=hard_negatives,
        teacher_rows=teacher_rows,
        validation_pairs=list(split.validation_pairs),
        stream=str(stream),
    )
    prepared.save()
    return prepared
