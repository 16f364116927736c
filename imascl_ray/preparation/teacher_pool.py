"""The teacher cache embedded on the cluster: Ray Data ``map_batches`` over a pool of teacher actors.

:class:`RayDataEmbedder` is a :class:`~imascl_ray.teacher.ShardEmbedder`: given the shards of a cache
that are still missing, it makes a dataset of one row per shard (its index, first row and sentences),
maps it with ``map_batches`` over an ``ActorPoolStrategy`` of actors that each load the teacher once
(one GPU each where the cluster has GPUs, else ``cpus_per_worker`` CPUs and as many torch threads),
and hands each finished shard back to :meth:`TeacherCache.build <imascl_ray.teacher.TeacherCache.build>`,
which writes it to the cache's shard folder on shared storage (so a rerun resumes from the finished
shards) and assembles the fingerprinted, memory-mapped cache. Every output row carries its sentence's
row number, so the cache keeps sentence order whatever order the actors finish in. An actor encodes a
shard exactly as the in-process path does (:func:`~imascl_ray.teacher.encode_shard`) and refuses to
start if its teacher's settings (weights, config, tokenizer, library versions) differ from the
driver's, so the fingerprint the driver computed is true of every row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from imascl_ray.errors import InputError
from imascl_ray.teacher import Shard, Teacher

logger = logging.getLogger(__name__)


class TeacherActor:
    """One Ray Data actor: loads the teacher once, then embeds one shard per call."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any],
        settings: dict[str, Any],
        batch_size: int,
        threads: int | None,
        use_gpu: bool,
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.teacher = Teacher.from_pretrained(name, **options)
        mine = self.teacher.settings()
        if mine != settings:
            differ = sorted(key for key in settings if mine.get(key) != settings[key])
            raise RuntimeError(
                f"teacher actor: the teacher {name} here differs from the driver's in {', '.join(differ)} "
                f"(driver {[settings[k] for k in differ]}, actor {[mine.get(k) for k in differ]}); "
                "give every node the same model files and library versions"
            )
        if use_gpu:
            self.teacher.encoder.to("cuda")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from imascl_ray.teacher import encode_shard

        shards, rows, vectors = [], [], []
        for index, start, texts in zip(batch["shard"], batch["start"], batch["sentences"], strict=True):
            texts = [str(text) for text in texts]
            vectors.append(encode_shard(self.teacher, texts, self.batch_size))
            rows.append(np.arange(int(start), int(start) + len(texts), dtype=np.int64))
            shards.append(np.full(len(texts), int(index), dtype=np.int64))
        return {
            "shard": np.concatenate(shards),
            "row": np.concatenate(rows),
            "embedding": np.concatenate(vectors),
        }


class RayDataEmbedder:
    """Embed cache shards on ``workers`` Ray Data actors (see the module docstring).

    ``use_gpu``: one GPU per actor; None (default) asks the cluster: GPUs if it has any. The driver must
    have joined (or started) its Ray cluster already.
    """

    def __init__(self, workers: int, *, cpus_per_worker: int = 1, use_gpu: bool | None = None) -> None:
        if workers < 1:
            raise InputError(f"teacher.workers: a Ray Data pool needs at least one actor, got {workers}")
        if cpus_per_worker < 1:
            raise InputError(f"teacher.cpus_per_worker must be at least 1, got {cpus_per_worker}")
        self.workers, self.cpus_per_worker, self.use_gpu = workers, cpus_per_worker, use_gpu

    def __call__(
        self, teacher: Teacher, sentences: Sequence[str], shards: Sequence[Shard], batch_size: int
    ) -> Iterator[tuple[Shard, np.ndarray]]:
        import ray

        if not shards:
            return
        if not ray.is_initialized():
            raise InputError(
                f"teacher.workers={self.workers}: the Ray Data teacher pool needs a Ray cluster; "
                "run through imascl-ray train / tune (which join or start one), or set teacher.workers=0"
            )
        use_gpu = self.use_gpu
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        encoder = teacher.encoder
        options = {
            "pooling": encoder.pooling,
            "normalize": encoder.normalize,
            "prefix": encoder.prefix,
            "max_length": encoder.max_length,
        }
        resources = {"num_gpus": 1} if use_gpu else {"num_cpus": self.cpus_per_worker}
        logger.info(
            "teacher cache: %d shard(s) on %d Ray Data actor(s), %s each",
            len(shards),
            self.workers,
            "1 GPU" if use_gpu else f"{self.cpus_per_worker} CPU",
        )
        items = [
            {"shard": s.index, "start": s.start, "sentences": list(sentences[s.start : s.stop])}
            for s in shards
        ]
        by_index = {shard.index: shard for shard in shards}
        filled: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        with _quiet_progress():  # the context is read when the dataset is made
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                TeacherActor,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=self.workers),
                fn_constructor_kwargs={
                    "name": encoder.name,
                    "options": options,
                    "settings": teacher.settings(),
                    "batch_size": batch_size,
                    "threads": None if use_gpu else self.cpus_per_worker,
                    "use_gpu": use_gpu,
                },
                **resources,
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for index in map(int, np.unique(batch["shard"])):
                    shard = by_index[index]
                    mine = batch["shard"] == index
                    if index not in filled:
                        filled[index] = np.empty((len(shard), teacher.embedding_dim), np.float32)
                    filled[index][batch["row"][mine] - shard.start] = batch["embedding"][mine]
                    counts[index] = counts.get(index, 0) + int(mine.sum())
                    if counts[index] == len(shard):
                        yield shard, filled.pop(index)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Ray Data's own progress bars off while the cache's bar counts sentences."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = before
