"""Everything a run needs before its workers start, done once on the driver (no Ray here).

From a :class:`~imascl_ray.config.Config`: the corpus is loaded (a file, the hub, or this machine's
gettext catalogues), cut to the pair set, cleaned of evaluation sentences, capped and split into
train / validation / test files; the student's starting model is resolved (the offline
multilingual-e5-small is built on first use; its vocabulary optionally trimmed to the corpus); the
teacher embeds every unique training sentence once into a cache that trials and reruns share; for the
``hard_negatives`` loss, each training pair's teacher-nearest non-translations are mined. Workers then only
read files: the :class:`PreparedRun` names them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imascl_ray.config import Config, ModelConfig
from imascl_ray.data import (
    Corpus,
    cap_per_pair,
    contamination_filter,
    load_hub_corpus,
    read_corpus,
    resolve_priority,
    select_pairs,
    train_validation_split,
    write_corpus,
)
from imascl_ray.data.split import read_evaluation_sentences
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline:multilingual-e5-small"
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

    def save(self) -> Path:
        path = Path(self.directory) / PREPARED_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PreparedRun:
        return cls(**json.loads((Path(directory) / PREPARED_FILE).read_text()))


def resolve_model(name: str) -> str:
    """A hub id or folder as is; ``offline:multilingual-e5-small`` built (once) from PyPI packages."""
    if name == OFFLINE_MODEL:
        from imascl_ray.offline_model import build_offline_model

        return str(build_offline_model())
    if name.startswith("offline:"):
        raise InputError(
            f"model.name: unknown offline model {name!r}; the offline model is {OFFLINE_MODEL!r}"
        )
    return name


def load_student(model: ModelConfig, path: str):
    """The student encoder at ``path`` (its starting checkpoint, or a trimmed copy) with the config's
    pooling, normalisation, prefix and length: how the driver, the workers and the export all load it."""
    from imascl_ray.encoder import SentenceEncoder

    return SentenceEncoder.from_pretrained(
        path,
        pooling=model.pooling,
        normalize=model.normalize,
        prefix=model.prefix,
        max_length=model.max_length,
        trust_remote_code=model.trust_remote_code,
    )


def load_source_corpus(config: Config, cache_dir: Path) -> Corpus:
    """The corpus ``data.corpus`` names: a file, ``hub:<dataset>``, or ``gettext`` (cached as Parquet)."""
    source = config.data.corpus
    if source == "gettext":
        from imascl_ray.data.gettext_corpus import cached_gettext_corpus

        return cached_gettext_corpus(config.data.languages, cache_dir)
    if source.startswith("hub:"):
        return load_hub_corpus(source.removeprefix("hub:"))
    return read_corpus(source)


def split_corpus(config: Config, corpus: Corpus) -> tuple[Corpus, Corpus, Corpus | None, list[str]]:
    """``(train, validation, test or None, language priority)`` by the config's data section."""
    data = config.data
    corpus = select_pairs(corpus, data.pair_set, data.languages)
    priority = resolve_priority(data.priority, corpus.src_lang, corpus.tgt_lang)
    if data.exclude:
        sets = {path: read_evaluation_sentences(path) for path in data.exclude}
        corpus, report = contamination_filter(corpus, sets)
        logger.info("contamination filter: %s", report.summary())
    test = None
    if data.test_pairs:
        held = data.validation_pairs + data.test_pairs
        corpus = cap_per_pair(corpus, data.max_pairs_per_language_pair + held, data.seed)
        split = train_validation_split(corpus, data.test_pairs, data.seed + 1)
        corpus, test = split.train, split.validation
    else:
        corpus = cap_per_pair(corpus, data.max_pairs_per_language_pair + data.validation_pairs, data.seed)
    split = train_validation_split(corpus, data.validation_pairs, data.seed)
    return split.train, split.validation, test, priority


def mine_hard_negatives(
    train: Corpus, teacher_embeddings: np.ndarray, k: int, chunk: int = 2048
) -> np.ndarray:
    """``[len(train), k]`` row indices: per pair, the ``k`` pairs of its language pair whose target the
    teacher finds closest to its own target, never a pair with the same target sentence."""
    _, tgt_ids = train.sentence_ids()
    negatives = np.empty((len(train), k), dtype=np.int64)
    for name, rows in train.group_indices().items():
        if len(rows) <= k:
            raise InputError(
                f"loss.hard_negatives: {name} has {len(rows)} training pairs, too few for {k} negatives"
            )
        vectors = np.asarray(teacher_embeddings[tgt_ids[rows]], dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        for start in range(0, len(rows), chunk):
            scores = vectors[start : start + chunk] @ vectors.T
            same = tgt_ids[rows][start : start + chunk, None] == tgt_ids[rows][None, :]
            scores[same] = -np.inf
            top = np.argpartition(-scores, k, axis=1)[:, :k]
            order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
            negatives[rows[start : start + chunk]] = rows[np.take_along_axis(top, order, axis=1)]
    return negatives


SHARED_SENTENCES_FILE = "teacher-sentences.json"


@dataclass
class SharedTeacherCache:
    """A teacher cache over a superset of a run's training sentences, and the sentence of each row.

    Built once by :func:`build_shared_teacher_cache` (a Tune sweep over several pair sets); every trial's
    :func:`prepare_run` looks its own training sentences up in it.
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


def _teacher_name(config: Config) -> str:
    student = resolve_model(config.model.name)
    return resolve_model(config.teacher.name) if config.teacher.name else student


def build_shared_teacher_cache(variants: Mapping[str, Config], directory: str | Path) -> SharedTeacherCache:
    """One teacher cache over the union of the training sentences of several configs.

    ``variants`` maps a label (where the variant comes from, for error messages: e.g. a search-space
    line and value) to a config; they must agree on the teacher (name and settings) and on the corpus
    source, and may differ in their data section (pair set, caps, splits). Every variant's corpus is
    split exactly as :func:`prepare_run` will split it, so a pair set the corpus lacks is reported here,
    with its label, before any training starts. The sentence list goes to
    ``directory/teacher-sentences.json``.
    """
    from imascl_ray.teacher import Teacher, TeacherCache

    if not variants:
        raise ValueError("build_shared_teacher_cache needs at least one config")
    first = next(iter(variants.values()))
    settings = {
        label: (_teacher_name(c), c.teacher.pooling, c.teacher.prefix, c.teacher.max_length, c.data.corpus)
        for label, c in variants.items()
    }
    if len(set(settings.values())) > 1:
        raise InputError(
            "the runs of one sweep share one teacher cache, so they must share the teacher and the corpus: "
            + "; ".join(f"{label}: {value}" for label, value in settings.items())
        )
    shared = Path(first.tracking.output_dir).resolve() / "cache"
    source = load_source_corpus(first, shared)
    union: set[str] = set()
    for label, config in variants.items():
        try:
            train, _, _, _ = split_corpus(config, source)
        except InputError as error:
            raise InputError(f"{label}: {error}") from None
        union.update(train.sentences())
        logger.info("[prepare] %s: %d training pairs", label, len(train))
    sentences = sorted(union)
    teacher_name = settings[next(iter(settings))][0]
    logger.info(
        "[prepare] teacher %s: one cache over %d sentences of %d variants",
        teacher_name,
        len(sentences),
        len(variants),
    )
    teacher = Teacher.from_pretrained(
        teacher_name,
        pooling=first.teacher.pooling,
        prefix=first.teacher.prefix,
        max_length=first.teacher.max_length,
    )
    cache_dir = Path(first.teacher.cache_dir) if first.teacher.cache_dir else shared / "teacher"
    cache = TeacherCache.build(teacher, sentences, cache_dir, batch_size=first.teacher.batch_size)
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    sentences_file = directory / SHARED_SENTENCES_FILE
    sentences_file.write_text(json.dumps(sentences, ensure_ascii=False) + "\n", encoding="utf-8")
    return SharedTeacherCache(cache=str(cache.directory), sentences=str(sentences_file))


def prepare_run(
    config: Config, directory: str | Path, *, shared_teacher: SharedTeacherCache | None = None
) -> PreparedRun:
    """Do everything :mod:`imascl_ray.prepare` describes for ``config`` into ``directory``.

    With ``shared_teacher`` the teacher does not run: the training sentences are looked up in that
    cache and their rows saved as ``data/teacher_rows.npy``.
    """
    from imascl_ray.teacher import Teacher, TeacherCache

    directory = Path(directory).resolve()
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    shared = Path(config.tracking.output_dir).resolve() / "cache"

    logger.info("[prepare] corpus %s", config.data.corpus)
    train, validation, test, priority = split_corpus(config, load_source_corpus(config, shared))
    paths = {"train": data_dir / "train.parquet", "validation": data_dir / "validation.parquet"}
    write_corpus(train, paths["train"])
    write_corpus(validation, paths["validation"])
    if test is not None:
        paths["test"] = data_dir / "test.parquet"
        write_corpus(test, paths["test"])
    counts = ", ".join(f"{name} {count}" for name, count in train.pair_counts().items())
    logger.info(
        "[prepare] train %d pairs (%s); validation %d; test %d",
        len(train),
        counts,
        len(validation),
        len(test) if test is not None else 0,
    )

    logger.info("[prepare] student %s", config.model.name)
    student = resolve_model(config.model.name)
    teacher_name = resolve_model(config.teacher.name) if config.teacher.name else student
    if config.model.trim_vocabulary:
        from imascl_ray.vocab import trim_vocabulary

        encoder = load_student(config.model, student)
        texts = [*train.sentences(), *validation.sentences(), *(test.sentences() if test is not None else [])]
        result = trim_vocabulary(encoder, texts)
        student = str(result.encoder.save(directory / "student-init"))
        logger.info("[prepare] vocabulary trimmed: %s", result)

    teacher_rows = None
    if shared_teacher is not None:
        logger.info("[prepare] teacher: the shared cache %s", shared_teacher.cache)
        cache = TeacherCache.open(shared_teacher.cache, reused=True)
        rows = shared_teacher.rows_for(train.sentences())
        teacher_rows = str(data_dir / "teacher_rows.npy")
        np.save(teacher_rows, rows)
        embeddings = np.asarray(cache.embeddings[rows]) if config.loss.label == "hard_negatives" else None
    else:
        logger.info("[prepare] teacher %s: embedding the training sentences (cached)", teacher_name)
        teacher = Teacher.from_pretrained(
            teacher_name,
            pooling=config.teacher.pooling,
            prefix=config.teacher.prefix,
            max_length=config.teacher.max_length,
        )
        cache_dir = Path(config.teacher.cache_dir) if config.teacher.cache_dir else shared / "teacher"
        cache = TeacherCache.build(
            teacher, train.sentences(), cache_dir, batch_size=config.teacher.batch_size
        )
        embeddings = cache.embeddings

    hard_negatives = None
    if config.loss.label == "hard_negatives":
        hard_negatives = str(data_dir / "hard_negatives.npy")
        np.save(hard_negatives, mine_hard_negatives(train, embeddings, config.loss.hard_negatives))

    prepared = PreparedRun(
        directory=str(directory),
        train=str(paths["train"]),
        validation=str(paths["validation"]),
        test=str(paths["test"]) if "test" in paths else None,
        student=student,
        teacher=teacher_name,
        teacher_cache=str(cache.directory),
        priority=list(priority),
        hard_negatives=hard_negatives,
        teacher_rows=teacher_rows,
    )
    prepared.save()
    return prepared
