"""The student: which checkpoint a run starts from, and how every stage of the run loads it.

:func:`resolve_model` turns ``model.name`` into a hub id or folder (building the offline
multilingual-e5-small on first use); :func:`prepare_student` optionally trims its vocabulary to the
run's texts; :func:`load_student` is how the driver, the workers and the export all load it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from imascl_ray.config import ModelConfig
from imascl_ray.data import RunSplit
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline:multilingual-e5-small"


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
        unpad=model.unpad,
    )


def prepare_student(model: ModelConfig, split: RunSplit, directory: Path) -> str:
    """The student's starting checkpoint: ``model.name`` resolved, or (``model.trim_vocabulary``) a copy
    written to ``directory/student-init`` that keeps only the vocabulary pieces the run's texts use."""
    logger.info("[prepare] student %s", model.name)
    student = resolve_model(model.name)
    if not model.trim_vocabulary:
        return student
    from imascl_ray.vocab import trim_vocabulary

    texts = [*split.train.sentences(), *split.validation.sentences()]
    if split.test is not None:
        texts += split.test.sentences()
    encoder = load_student(model, student)
    result = trim_vocabulary(encoder, texts)  # in place
    logger.info(
        "[prepare] vocabulary trimmed: %d of %d pieces kept", result.new_vocab_size, result.old_vocab_size
    )
    return str(encoder.save(directory / "student-init"))
