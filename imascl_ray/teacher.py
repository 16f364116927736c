"""The frozen teacher and its on-disk embedding cache.

The teacher only ever provides targets: its similarities become the soft labels. It is frozen (eval
mode, no gradient) and may differ from the student in architecture and tokenizer. Since its outputs
never change, every unique sentence of a corpus is embedded once and stored as a memory-mapped
``[n_sentences, d]`` array; training looks rows up by sentence index (``Corpus.sentences()`` order)
instead of running the teacher every step.

The cache lives in ``cache_dir/teacher-<fingerprint>/`` where the fingerprint hashes everything that
decides the vectors: the teacher's weights (``revision``) and tokenizer, its prefix, pooling,
normalisation and ``max_length``, the storage dtype, and the sentence list itself. Same fingerprint:
the next run (or the next Tune trial) reuses the files; changed corpus or teacher: a new cache is
built. A cache is written into a temporary folder and renamed into place when complete, so a crash
never leaves a half-written cache under a valid name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from imascl_ray.encoder import SentenceEncoder
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

CacheDtype = Literal["float32", "float16"]
EMBEDDINGS_FILE = "embeddings.npy"
META_FILE = "meta.json"
CACHE_FORMAT = 1


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
        encoder = self.encoder
        return {
            "revision": encoder.revision,
            "tokenizer": tokenizer_hash(encoder.tokenizer),
            "prefix": encoder.prefix,
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "max_length": encoder.max_length,
        }


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
    ) -> TeacherCache:
        """Open the cache for (teacher, sentences) under ``cache_dir``, embedding them first if needed.

        Embeds in batches of ``batch_size`` (with a progress bar when ``show_progress``), writes into
        a temporary folder next to the final one and renames it into place. If another process
        finishes the same cache first, its copy is used.
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
        if (final / META_FILE).is_file():
            logger.info("teacher cache: reusing %s", final)
            return cls.open(final, reused=True)

        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".teacher-{fingerprint}-", dir=cache_dir))
        try:
            started = time.perf_counter()
            logger.info("teacher cache: embedding %d sentences with %s", len(sentences), teacher.name)
            array = np.lib.format.open_memmap(
                staging / EMBEDDINGS_FILE,
                mode="w+",
                dtype=np.dtype(dtype),
                shape=(len(sentences), teacher.embedding_dim),
            )
            chunk = max(batch_size * 16, 1)  # encode() sorts by length within each chunk
            progress = None
            if show_progress:
                from tqdm.auto import tqdm

                progress = tqdm(total=len(sentences), desc="teacher cache", unit="sentence")
            for start in range(0, len(sentences), chunk):
                part = sentences[start : start + chunk]
                array[start : start + len(part)] = teacher.encode(part, batch_size=batch_size).numpy()
                if progress is not None:
                    progress.update(len(part))
            if progress is not None:
                progress.close()
            array.flush()
            del array
            meta = {
                "format": CACHE_FORMAT,
                "fingerprint": fingerprint,
                "teacher_name": teacher.name,
                "teacher": settings,
                "n_sentences": len(sentences),
                "embedding_dim": teacher.embedding_dim,
                "dtype": dtype,
                "sentences_sha256": sentences_hash(sentences),
                "seconds": round(time.perf_counter() - started, 3),
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            _fsync_folder(staging)
            try:
                os.rename(staging, final)
            except OSError:
                if not (final / META_FILE).is_file():
                    raise
                logger.info("teacher cache: another process built %s first; using it", final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("teacher cache: wrote %s", final)
        return cls.open(final)

    @classmethod
    def open(cls, directory: str | Path, *, reused: bool = False) -> TeacherCache:
        """Memory-map an existing cache folder, checking its array against its ``meta.json``."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise InputError(f"{directory}: not a teacher cache (no {META_FILE})")
        meta = json.loads(meta_path.read_text())
        embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
        expected = (meta["n_sentences"], meta["embedding_dim"])
        if embeddings.shape != expected or embeddings.dtype != np.dtype(meta["dtype"]):
            raise InputError(
                f"{directory / EMBEDDINGS_FILE}: shape {embeddings.shape} {embeddings.dtype} does not match "
                f"{META_FILE} ({expected} {meta['dtype']}); delete the folder to rebuild it"
            )
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
        return torch.from_numpy(np.asarray(self.embeddings[index], dtype=np.float32))


def _fsync_folder(directory: Path) -> None:
    """Flush every file of ``directory`` to disk before it is renamed into place."""
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
