"""The stream folder of a run: its batch plan and training rows as files the workers memory-map.

Once per run, on the driver, after the teacher cache: the training split's batches for every epoch the
schedule reaches, each pair's language pair and anchor side, its sentences' rows in the teacher cache,
and the texts (:func:`imascl_ray.data.stream.write_stream`). Workers then never read the whole corpus
nor build a plan: each reads the rows of its own steps (:class:`~imascl_ray.data.stream.StreamedPairs`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from imascl_ray.config import Config
from imascl_ray.data import Corpus
from imascl_ray.data.stream import write_stream

logger = logging.getLogger(__name__)

STREAM_DIR = "stream"


def prepare_stream(
    config: Config,
    train: Corpus,
    priority: list[str],
    data_dir: Path,
    *,
    cache_fingerprint: str,
    cache_rows: int,
    teacher_rows: np.ndarray | None = None,
) -> Path:
    """Write ``data_dir/stream`` for ``train``; ``teacher_rows``: sentence id -> cache row (a shared cache),
    None for the run's own cache (row ``i`` is sentence ``i`` of ``train.sentences()``)."""
    started = time.perf_counter()
    src_ids, tgt_ids = train.sentence_ids()
    if teacher_rows is not None:
        src_ids, tgt_ids = teacher_rows[src_ids], teacher_rows[tgt_ids]
    top = int(max(src_ids.max(initial=-1), tgt_ids.max(initial=-1)))
    if top >= cache_rows:
        raise ValueError(f"the teacher cache has {cache_rows} rows, the training pairs need row {top}")
    schedule = config.schedule
    directory = data_dir / STREAM_DIR
    meta = write_stream(
        directory,
        src_lang=train.src_lang,
        tgt_lang=train.tgt_lang,
        src=train.src,
        tgt=train.tgt,
        teacher_src=src_ids,
        teacher_tgt=tgt_ids,
        global_batch_size=schedule.global_batch_size,
        seed=schedule.seed,
        mixed=config.data.mixed_batches,
        priority=priority,
        total_steps=schedule.max_steps,
        epochs=schedule.epochs,
        extra={"teacher_cache": cache_fingerprint, "teacher_cache_rows": cache_rows},
    )
    logger.info(
        "[prepare] batch plan: %d steps per epoch x %d epoch(s), %d pairs, in %.1f s",
        meta["steps_per_epoch"],
        meta["epochs"],
        meta["pairs"],
        time.perf_counter() - started,
    )
    if meta["skipped_pairs"]:
        logger.warning(
            "language pair(s) %s have fewer distinct pairs than one global batch (%d): not used",
            ", ".join(meta["skipped_pairs"]),
            schedule.global_batch_size,
        )
    return directory
