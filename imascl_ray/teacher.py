"""The frozen teacher and its on-disk embedding cache.

The teacher only ever provides targets: its similarities become the soft labels. It is frozen (eval
mode, no gradient) and may differ from the student in architecture and tokenizer. Since its outputs
never change, every unique sentence of a corpus is embedded once and stored as a memory-mapped
``[n_sentences, d]`` array; training looks rows up by sentence index (``Corpus.sentences()`` order)
instead of running the teacher every step.

The cache lives in ``cache_dir/teacher-<fingerprint>/`` where the fingerprint hashes everything that
decides the vectors: the teacher's weights (``revision``), its non-weight model config
(``config.json``: ``layer_norm_eps``, ``hidden_act``, ...) and tokenizer, its prefix, pooling,
normalisation and ``max_length``, the torch and transformers versions, the storage dtype, and the
sentence list itself. Same fingerprint: the next run (or the next Tune trial) reuses the files; changed
corpus or teacher: a new cache is built.

A cache is embedded shard by shard (:class:`Shard`, a few thousand rows each); each finished shard is
written (atomically) to ``cache_dir/.teacher-<fingerprint>.shards/``, so an interrupted build resumes
from the shards it finished. Who embeds the shards is pluggable (:data:`ShardEmbedder`): this process
by default, or a pool of Ray Data actors (:mod:`imascl_ray.preparation.teacher_pool`; nothing here imports
Ray). The shards are then assembled into a temporary folder that is renamed into place when complete,
so a crash never leaves a half-written cache under a valid name.

``meta.json`` records the size and SHA-256 of ``embeddings.npy`` as written. Before a cache is reused
the file is checked against both (:func:`cache_damage`); a damaged one (truncated, overwritten, its
``meta.json`` unreadable) is rebuilt with one log line saying so, and :meth:`TeacherCache.open` checks
the size (and the array header) before it memory-maps anything, so a partial file is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from imascl_ray.data.row_reader import read_rows
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

CacheDtype = Literal["float32", "float16"]
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
LAYOUT_FILE = "layout.json"
CACHE_FORMAT = 1
ENCODE_WINDOW = 16
"""Batches per :meth:`SentenceEncoder.encode` call: texts are sorted by length within such a window."""
SHARD_WINDOWS = 4
"""Encode windows per shard: 8192 sentences at ``teacher.batch_size`` 128."""


class Teacher:
    """A frozen :class:`SentenceEncoder`: eval mode, no gradient, never trained.

    ``teacher(texts)`` and ``teacher.encode(texts)`` both return float32 CPU embeddings without
    gradient (there is no training-mode forward for a teacher).
    """

    def __init__(self, encoder: SentenceEncoder) -> None:
        encoder.eval()
        encoder.requires_grad_(False)
        self.encoder = encoder

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> Teacher:
        """Load like :meth:`SentenceEncoder.from_pretrained` (same keyword arguments), then freeze."""
        return cls(SentenceEncoder.from_pretrained(name_or_path, **kwargs))

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def embedding_dim(self) -> int:
        return self.encoder.embedding_dim

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> Tensor:
        """Embeddings ``[n, d_g]`` (float32, CPU, no gradient), in the order of ``texts``."""
        return self.encoder.encode(texts, batch_size=batch_size, show_progress=show_progress)

    __call__ = encode

    def settings(self) -> dict[str, Any]:
        """What decides the teacher's vectors, for the cache fingerprint: content, not location."""
        import transformers

        encoder = self.encoder
        return {
            "revision": encoder.revision,
            "model_config": model_config_hash(encoder.model),
            "tokenizer": tokenizer_hash(encoder.tokenizer),
            "prefix": encoder.prefix,
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "max_length": encoder.max_length,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }


def model_config_hash(model: Any) -> str:
    """A content hash (sha256, 20 hex digits) of a model's non-weight config (``config.json``).

    Where the folder lies (``_name_or_path``) and the transformers version that wrote it are left
    out (the version that runs is part of :meth:`Teacher.settings`); the attention implementation is in.
    """
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    config.pop("transformers_version", None)
    config["attention"] = getattr(model.config, "_attn_implementation", None)
    text = json.dumps(config, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def tokenizer_hash(tokenizer: Any) -> str:
    """A content hash (sha256, 20 hex digits) of a fast tokenizer's definition (``tokenizer.json``).

    The ``truncation`` and ``padding`` entries are left out: Hugging Face rewrites them on every call
    with padding/truncation arguments, and the encoder passes its own on each batch anyway.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
    else:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def sentences_hash(sentences: Sequence[str]) -> str:
    """A content hash of a sentence list, order included (row ``i`` of the cache is sentence ``i``)."""
    digest = hashlib.sha256(f"{len(sentences)}\n".encode())
    for sentence in sentences:
        encoded = sentence.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def cache_fingerprint(settings: dict[str, Any], sentences: Sequence[str], dtype: CacheDtype) -> str:
    """The cache's name: sha256 over the teacher settings, the storage dtype and the sentences."""
    payload = {
        "format": CACHE_FORMAT,
        "teacher": settings,
        "dtype": dtype,
        "sentences": sentences_hash(sentences),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of a cache: the unit that is embedded, written and resumed."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_shards(n_sentences: int, shard_size: int) -> list[Shard]:
    """The shards of ``n_sentences`` rows, ``shard_size`` each (the last one shorter)."""
    starts = range(0, n_sentences, shard_size)
    return [Shard(i, start, min(start + shard_size, n_sentences)) for i, start in enumerate(starts)]


def encode_shard(teacher: Teacher, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """The teacher's embeddings ``[len(texts), d]`` (float32) of one shard's sentences.

    Encoded ``ENCODE_WINDOW`` batches at a time, so that every way of running the teacher (this
    process, a Ray Data actor) groups and pads the same texts together and computes the same rows.
    """
    window = max(batch_size * ENCODE_WINDOW, 1)
    out = np.empty((len(texts), teacher.embedding_dim), dtype=np.float32)
    for start in range(0, len(texts), window):
        part = texts[start : start + window]
        out[start : start + len(part)] = teacher.encode(part, batch_size=batch_size).numpy()
    return out


class ShardEmbedder(Protocol):
    """Embeds ``shards`` of ``sentences`` and yields each finished one (in any order) with its rows.

    Every yielded array is ``[len(shard), d]`` with row ``i`` the embedding of
    ``sentences[shard.start + i]``, as :func:`encode_shard` computes it with ``teacher``'s settings.
    """

    def __call__(
        self, teacher: Teacher, sentences: Sequence[str], shards: Sequence[Shard], batch_size: int
    ) -> Iterable[tuple[Shard, np.ndarray]]: ...


def embed_in_process(
    teacher: Teacher, sentences: Sequence[str], shards: Sequence[Shard], batch_size: int
) -> Iterable[tuple[Shard, np.ndarray]]:
    """The default :class:`ShardEmbedder`: this process's teacher, one shard after the other."""
    for shard in shards:
        yield shard, encode_shard(teacher, sentences[shard.start : shard.stop], batch_size)


@dataclass
class TeacherCache:
    """Teacher embeddings of a sentence list, memory-mapped from ``directory/embeddings.npy``.

    Row ``i`` is the teacher's embedding of sentence ``i``. Build or reuse one with :meth:`build`.
    """

    directory: Path
    fingerprint: str
    embeddings: np.ndarray  # memory-mapped, read-only, [n_sentences, d]
    reused: bool = False

    @classmethod
    def build(
        cls,
        teacher: Teacher | SentenceEncoder,
        sentences: Sequence[str],
        cache_dir: str | Path,
        *,
        dtype: CacheDtype = "float32",
        batch_size: int = 64,
        show_progress: bool = True,
        shard_size: int | None = None,
        embedder: ShardEmbedder | None = None,
    ) -> TeacherCache:
        """Open the cache for (teacher, sentences) under ``cache_dir``, embedding them first if needed.

        The sentences are embedded in shards of ``shard_size`` rows (default: ``SHARD_WINDOWS``
        encode windows of ``ENCODE_WINDOW`` batches of ``batch_size``) by ``embedder`` (default: this
        process, :func:`embed_in_process`), with a progress bar when ``show_progress``. Shards a
        previous, interrupted build finished are not embedded again. If another process finishes the
        same cache first, its copy is used.
        """
        if dtype not in ("float32", "float16"):
            raise InputError(f"teacher cache dtype: {dtype!r} is not one of float32, float16")
        if not isinstance(teacher, Teacher):
            teacher = Teacher(teacher)
        sentences = list(sentences)
        settings = teacher.settings()
        fingerprint = cache_fingerprint(settings, sentences, dtype)
        cache_dir = Path(cache_dir)
        final = cache_dir / f"teacher-{fingerprint}"
        if final.exists():
            damage = cache_damage(final, checksum=True)
            if damage is None:
                logger.info("teacher cache: reusing %s", final)
                return cls.open(final, reused=True)
            logger.warning("teacher cache: %s is damaged (%s); rebuilding it", final, damage)
            _discard_damaged(final, damage)

        started = time.perf_counter()
        shard_size = shard_size or max(batch_size * ENCODE_WINDOW * SHARD_WINDOWS, 1)
        shards = plan_shards(len(sentences), shard_size)
        store = _ShardStore(
            cache_dir / f".teacher-{fingerprint}.shards",
            {"shard_size": shard_size, "dim": teacher.embedding_dim, "dtype": dtype},
        )
        todo = [shard for shard in shards if not store.has(shard)]
        if len(todo) < len(shards):
            logger.info(
                "teacher cache: resuming, %d of %d shards already embedded",
                len(shards) - len(todo),
                len(shards),
            )
        logger.info("teacher cache: embedding %d sentences with %s", sum(map(len, todo)), teacher.name)
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=len(sentences),
                initial=len(sentences) - sum(map(len, todo)),
                desc="teacher cache",
                unit="sentence",
            )
        try:
            for shard, rows in (embedder or embed_in_process)(teacher, sentences, todo, batch_size):
                store.put(shard, rows)
                if progress is not None:
                    progress.update(len(shard))
        finally:
            if progress is not None:
                progress.close()
        missing = [shard.index for shard in shards if not store.has(shard)]
        if missing:
            raise RuntimeError(f"teacher cache: the embedder left shards {missing} of {final.name} unwritten")

        staging = Path(tempfile.mkdtemp(prefix=f".teacher-{fingerprint}-", dir=cache_dir))
        try:
            array = np.lib.format.open_memmap(
                staging / EMBEDDINGS_FILE,
                mode="w+",
                dtype=np.dtype(dtype),
                shape=(len(sentences), teacher.embedding_dim),
            )
            for shard in shards:
                array[shard.start : shard.stop] = store.get(shard)
            array.flush()
            del array
            written = staging / EMBEDDINGS_FILE
            meta = {
                "format": CACHE_FORMAT,
                "fingerprint": fingerprint,
                "teacher_name": teacher.name,
                "teacher": settings,
                "n_sentences": len(sentences),
                "embedding_dim": teacher.embedding_dim,
                "dtype": dtype,
                "sentences_sha256": sentences_hash(sentences),
                "embeddings_bytes": written.stat().st_size,
                "embeddings_sha256": file_sha256(written),
                "seconds": round(time.perf_counter() - started, 3),
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            _fsync_folder(staging)
            try:
                os.rename(staging, final)
            except OSError:
                if not final.exists() or cache_damage(final, checksum=False) is not None:
                    raise
                logger.info("teacher cache: another process built %s first; using it", final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(store.directory, ignore_errors=True)
        logger.info("teacher cache: wrote %s", final)
        return cls.open(final)

    @classmethod
    def open(cls, directory: str | Path, *, reused: bool = False, checksum: bool = False) -> TeacherCache:
        """Memory-map an existing cache folder once :func:`cache_damage` finds it sound: its array's
        header and size against ``meta.json`` always (cheap: every Ray worker opens the cache), its
        checksum too with ``checksum`` (:meth:`build` checks it before reusing a cache)."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise InputError(f"{directory}: not a teacher cache (no {META_FILE})")
        damage = cache_damage(directory, checksum=checksum)
        if damage is not None:
            raise InputError(
                f"{directory}: damaged teacher cache ({damage}); delete the folder and run again to "
                "rebuild it"
            )
        meta = json.loads((directory / META_FILE).read_text())
        embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
        return cls(directory=directory, fingerprint=meta["fingerprint"], embeddings=embeddings, reused=reused)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    def lookup(self, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor:
        """Rows ``[len(indices), d]`` as a float32 CPU tensor (sentence indices into the cached list)."""
        if isinstance(indices, Tensor):
            indices = indices.detach().cpu().numpy()
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"teacher cache has {len(self)} sentences; index out of range")
        # Read, not indexed through the mapping: a worker holds its rows, not the pages around them.
        return torch.from_numpy(np.asarray(read_rows(self.embeddings, index), dtype=np.float32))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (a cache of a paper-sized corpus is a few GB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cache_damage(directory: Path, *, checksum: bool) -> str | None:
    """Why the cache folder ``directory`` cannot be used, or None when it is sound.

    Checked in order: ``meta.json`` is readable and complete; ``embeddings.npy`` exists, has a valid
    ``.npy`` header whose shape and dtype are ``meta.json``'s, and is as long as that header says (and
    as ``meta.json`` recorded); with ``checksum``, its SHA-256 is the one recorded when it was written.
    (Caches written before the size and checksum were recorded are checked by their header alone.)
    """
    meta_path, path = directory / META_FILE, directory / EMBEDDINGS_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected_shape = (int(meta["n_sentences"]), int(meta["embedding_dim"]))
        expected_dtype = np.dtype(meta["dtype"])
        if not isinstance(meta["fingerprint"], str):
            raise TypeError("the fingerprint is not a string")
    except FileNotFoundError:
        return f"no {META_FILE}"
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as error:
        return f"{META_FILE} is unreadable: {type(error).__name__}: {error}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
            read_header = read_header or np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
    except FileNotFoundError:
        return f"no {EMBEDDINGS_FILE}"
    except (OSError, ValueError) as error:
        return f"{EMBEDDINGS_FILE} has no valid array header: {error}"
    if tuple(shape) != expected_shape or dtype != expected_dtype:
        found, recorded_as = f"{tuple(shape)} {dtype}", f"{expected_shape} {expected_dtype}"
        return f"{EMBEDDINGS_FILE} holds {found}, {META_FILE} says {recorded_as}"
    needed = data_start + int(np.prod(shape)) * dtype.itemsize
    recorded = meta.get("embeddings_bytes", needed)
    if size != needed or size != recorded:
        return f"{EMBEDDINGS_FILE} is {size} bytes, {max(needed, recorded)} expected (truncated or partial)"
    if checksum and "embeddings_sha256" in meta and file_sha256(path) != meta["embeddings_sha256"]:
        return f"{EMBEDDINGS_FILE} does not match the checksum recorded when it was written"
    return None


def _discard_damaged(directory: Path, damage: str) -> None:
    """Remove a damaged cache folder so it can be rebuilt: renamed aside first (so no reader takes the
    name meanwhile), then deleted; one line naming the folder if it cannot be removed."""
    aside = directory.with_name(f".{directory.name}-damaged-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(directory, aside)
    except FileNotFoundError:
        return  # another process removed it first
    except OSError as error:
        raise InputError(
            f"{directory}: damaged teacher cache ({damage}) that cannot be removed to rebuild it "
            f"({error.strerror or error}); delete the folder and run again"
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_folder(directory: Path) -> None:
    """Flush every file of ``directory`` to disk before it is renamed into place."""
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


class _ShardStore:
    """The finished shards of one cache build: ``<directory>/<index>.npy``, each written atomically.

    ``layout`` (shard size, width, dtype) is recorded in ``layout.json``; shards of another layout
    are discarded rather than mixed in.
    """

    def __init__(self, directory: Path, layout: dict[str, Any]) -> None:
        self.directory = directory
        self.dtype = np.dtype(layout["dtype"])
        self.dim = int(layout["dim"])
        layout_file = directory / LAYOUT_FILE
        if layout_file.is_file() and json.loads(layout_file.read_text()) != layout:
            logger.info("teacher cache: discarding the shards of another layout in %s", directory)
            shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
        layout_file.write_text(json.dumps(layout) + "\n")

    def path(self, shard: Shard) -> Path:
        return self.directory / f"{shard.index:06d}.npy"

    def has(self, shard: Shard) -> bool:
        path = self.path(shard)
        if not path.is_file():
            return False
        try:
            rows = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return rows.shape == (len(shard), self.dim) and rows.dtype == self.dtype

    def get(self, shard: Shard) -> np.ndarray:
        return np.load(self.path(shard), mmap_mode="r")

    def put(self, shard: Shard, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.shape != (len(shard), self.dim):
            raise ValueError(
                f"teacher cache: shard {shard.index} came back as {rows.shape}, "
                f"expected {(len(shard), self.dim)}"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{shard.index:06d}.{os.getpid()}.partial.npy"
        with open(partial, "wb") as handle:
            np.save(handle, rows.astype(self.dtype, copy=False))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path(shard))
