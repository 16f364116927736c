"""The training pairs as files a worker memory-maps: its RSS follows its batch, not the corpus.

The driver writes one folder (:func:`write_stream`) once per run; every worker opens it
(:meth:`StreamedPairs.open`) and, per step, reads only the rows of its global batch:

=====================  ===========================================================================
``meta.json``          shapes, the plan's settings and counts, the pair names, the teacher cache it maps to
``texts.arrow``        the source and target sentences, an uncompressed Arrow IPC file (memory-mapped)
``batches.npy``        ``[epochs, steps_per_epoch, G]`` corpus rows of every global batch of the run
``pair.npy``           per row, the code of its language pair (``meta["pair_names"]``)
``anchor_src.npy``     per row, whether the anchor (higher-priority language) is the source side
``teacher_src.npy``    per row, the teacher cache row of its source sentence (and ``teacher_tgt.npy``)
=====================  ===========================================================================

The batches are :class:`~imascl_ray.data.batch_plan.BatchPlan`'s for the same seed (computed by
:mod:`~imascl_ray.data.plan_arrays`), for every epoch the run needs, so resuming at any global step is
reading row ``step`` of ``batches.npy``. Integers are int32 when they fit. Every ``.npy`` opens with
``mmap_mode="r"`` and the Arrow file through ``pyarrow.memory_map``: opening costs nothing; a step reads
its ``G`` batch indices (one contiguous run), and the per-row arrays at those rows with ``pread``
(:mod:`~imascl_ray.data.row_reader`: no page of them is mapped into the worker), and ``G / W`` texts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imascl_ray.data.batch_plan import MIXED, GlobalBatch
from imascl_ray.data.languages import SRC, TGT, anchor_side
from imascl_ray.data.plan_arrays import epoch_batches, plan_classes, pool_rows, sentence_keys
from imascl_ray.data.row_reader import read_rows
from imascl_ray.errors import InputError

STREAM_FORMAT = 1
META_FILE = "meta.json"
TEXTS_FILE = "texts.arrow"
ARRAYS = ("batches", "pair", "anchor_src", "teacher_src", "teacher_tgt")
_COLOURING_STREAM = 0x5EED  # as batch_plan: the colouring's random stream
TEXT_CHUNK = 65_536
"""Rows per Arrow record batch of ``texts.arrow``."""


def _index_dtype(limit: int) -> np.dtype:
    return np.dtype(np.int32 if limit < 2**31 else np.int64)


def write_stream(
    directory: str | Path,
    *,
    src_lang: Sequence[str],
    tgt_lang: Sequence[str],
    src: Sequence[str],
    tgt: Sequence[str],
    teacher_src: np.ndarray,
    teacher_tgt: np.ndarray,
    global_batch_size: int,
    seed: int,
    mixed: bool,
    priority: Sequence[str],
    total_steps: int | None,
    epochs: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan the run's batches and write the folder the workers stream from; returns its ``meta.json``.

    ``teacher_src`` / ``teacher_tgt``: each row's teacher cache rows. ``total_steps``: the run's step
    budget (``schedule.max_steps``), else ``epochs`` epochs: batches are written for every epoch it
    reaches. ``extra`` goes into ``meta.json`` (the teacher cache's fingerprint, for the workers' check).
    The errors are :class:`BatchPlan`'s: an indivisible or too large global batch.
    """
    import pyarrow as pa

    if global_batch_size < 1:
        raise InputError(f"global_batch_size: must be at least 1, got {global_batch_size}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(src)
    src_codes, src_index = np.unique(np.asarray(src_lang, dtype=str), return_inverse=True)
    tgt_codes, tgt_index = np.unique(np.asarray(tgt_lang, dtype=str), return_inverse=True)
    combined, pair_codes = np.unique(src_index * len(tgt_codes) + tgt_index, return_inverse=True)
    pair_codes = pair_codes.reshape(-1)
    languages = [
        (str(src_codes[c // len(tgt_codes)]), str(tgt_codes[c % len(tgt_codes)])) for c in combined.tolist()
    ]
    names = [f"{s}-{t}" for s, t in languages]
    if len(names) >= 2**15:
        raise InputError(f"{len(names)} language pairs: more than a stream folder can code")
    anchor_of_code = np.array([anchor_side(s, t, priority) == SRC for s, t in languages])

    keys = sentence_keys((text for side in (src, tgt) for text in side), 2 * n)
    classes = plan_classes(
        pool_rows(pair_codes, names, mixed),
        keys[:n],
        keys[n:],
        global_batch_size,
        np.random.default_rng([int(seed), _COLOURING_STREAM]),
    )
    del keys
    steps_per_epoch = classes.steps_per_epoch(global_batch_size)
    if steps_per_epoch == 0:
        counts = ", ".join(f"{name}: {int((pair_codes == code).sum())}" for code, name in enumerate(names))
        raise InputError(
            f"global_batch_size: the corpus ({n} pairs; {counts or 'empty'}) is smaller than one global "
            f"batch of {global_batch_size} pairs" + ("" if mixed else " of a single language pair")
        )
    steps = total_steps or steps_per_epoch * epochs
    run_epochs = max(1, math.ceil(steps / steps_per_epoch))
    batches = np.lib.format.open_memmap(
        directory / "batches.npy",
        mode="w+",
        dtype=_index_dtype(n),
        shape=(run_epochs, steps_per_epoch, global_batch_size),
    )
    for epoch in range(run_epochs):
        batches[epoch] = epoch_batches(classes.classes, global_batch_size, seed, epoch)
    batches.flush()
    del batches
    np.save(directory / "pair.npy", pair_codes.astype(np.int16))
    np.save(directory / "anchor_src.npy", anchor_of_code[pair_codes])
    limit = int(max(teacher_src.max(initial=0), teacher_tgt.max(initial=0))) + 1
    np.save(directory / "teacher_src.npy", np.asarray(teacher_src).astype(_index_dtype(limit)))
    np.save(directory / "teacher_tgt.npy", np.asarray(teacher_tgt).astype(_index_dtype(limit)))

    schema = pa.schema([("src", pa.string()), ("tgt", pa.string())])
    with pa.OSFile(str(directory / TEXTS_FILE), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, n, TEXT_CHUNK):
            stop = min(start + TEXT_CHUNK, n)
            writer.write_batch(
                pa.record_batch(
                    [pa.array(src[start:stop], pa.string()), pa.array(tgt[start:stop], pa.string())],
                    schema=schema,
                )
            )
    meta = {
        "format": STREAM_FORMAT,
        "pairs": n,
        "global_batch_size": global_batch_size,
        "seed": int(seed),
        "mixed": bool(mixed),
        "steps_per_epoch": steps_per_epoch,
        "epochs": run_epochs,
        "pair_names": names,
        "priority": list(priority),
        "duplicates_removed": classes.duplicates_removed,
        "unused_rows": classes.unused_rows,
        "skipped_pairs": classes.skipped_pairs,
        **(extra or {}),
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@dataclass
class StreamedPairs:
    """A worker's view of a stream folder: the plan and the rows, memory-mapped (see the module doc).

    It offers what the loop asks of a batch plan (``steps_per_epoch``, ``position``, ``batches``,
    ``total_steps``) and of the pairs (``texts``, ``teacher_rows``).
    """

    directory: Path
    meta: dict[str, Any]
    batch_rows: np.ndarray
    pair: np.ndarray
    anchor_src: np.ndarray
    teacher_src: np.ndarray
    teacher_tgt: np.ndarray
    texts_table: Any
    world_size: int = 1

    @classmethod
    def open(cls, directory: str | Path, world_size: int = 1) -> StreamedPairs:
        """Memory-map a folder :func:`write_stream` wrote; checks shapes against ``meta.json`` (cheap)."""
        import pyarrow as pa

        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as error:
            raise InputError(
                f"{directory}: not a readable stream folder ({error}); prepare the run again"
            ) from None
        if meta.get("format") != STREAM_FORMAT:
            raise InputError(f"{directory}: stream format {meta.get('format')}, expected {STREAM_FORMAT}")
        size = int(meta["global_batch_size"])
        if size % world_size:
            raise InputError(
                f"global_batch_size: {size} is not divisible by world_size {world_size}, so the ranks "
                "cannot take equal slices"
            )
        arrays = {}
        for name in ARRAYS:
            try:
                arrays[name] = np.load(directory / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as error:
                raise InputError(
                    f"{directory}/{name}.npy: unreadable ({error}); prepare the run again"
                ) from None
        n = int(meta["pairs"])
        expected = {"batches": (int(meta["epochs"]), int(meta["steps_per_epoch"]), size)}
        for name, array in arrays.items():
            shape = expected.get(name, (n,))
            if array.shape != shape:
                raise InputError(
                    f"{directory}/{name}.npy holds {array.shape}, expected {shape}: prepare the run again"
                )
        texts = pa.ipc.open_file(pa.memory_map(str(directory / TEXTS_FILE), "r")).read_all()
        if texts.num_rows != n:
            raise InputError(f"{directory}/{TEXTS_FILE}: {texts.num_rows} rows, expected {n}")
        return cls(
            directory,
            meta,
            texts_table=texts,
            world_size=world_size,
            **{
                "batch_rows": arrays["batches"],
                "pair": arrays["pair"],
                "anchor_src": arrays["anchor_src"],
                "teacher_src": arrays["teacher_src"],
                "teacher_tgt": arrays["teacher_tgt"],
            },
        )

    # ---- the plan ----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return int(self.meta["steps_per_epoch"])

    @property
    def global_batch_size(self) -> int:
        return int(self.meta["global_batch_size"])

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.world_size

    @property
    def mixed(self) -> bool:
        return bool(self.meta["mixed"])

    def __len__(self) -> int:
        return int(self.meta["pairs"])

    def total_steps(self, epochs: int) -> int:
        return self.steps_per_epoch * epochs

    def position(self, global_step: int) -> tuple[int, int]:
        """``(epoch, step)`` of a run's ``global_step``-th step (0-based)."""
        return divmod(int(global_step), self.steps_per_epoch)

    def batch(self, epoch: int, step: int) -> GlobalBatch:
        """Global batch ``step`` of ``epoch``: its ``G`` rows read from the memory-mapped plan."""
        if not 0 <= epoch < self.batch_rows.shape[0]:
            raise InputError(
                f"epoch {epoch}: the prepared plan holds {self.batch_rows.shape[0]} epoch(s) "
                f"(schedule changed since preparation?): prepare the run again"
            )
        rows = np.asarray(self.batch_rows[epoch, step], dtype=np.int64)  # one contiguous run of the file
        sides = tuple(SRC if flag else TGT for flag in read_rows(self.anchor_src, rows))
        if self.mixed:
            language_pair, side = None, None
        else:
            pair_code = int(read_rows(self.pair, rows[:1])[0])
            language_pair, side = self.meta["pair_names"][pair_code], sides[0]
        return GlobalBatch(step, rows, language_pair, side, sides, self.world_size)

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[GlobalBatch]:
        """The global batches of ``epoch`` from ``start_step`` on, read one at a time."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise InputError(f"start_step: {start_step} outside 0..{self.steps_per_epoch} (steps per epoch)")
        for step in range(start_step, self.steps_per_epoch):
            yield self.batch(epoch, step)

    # ---- the rows ----------------------------------------------------------------------------
    def texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The source and target sentences of ``rows`` (only their pages of the Arrow file are read)."""
        # Per record batch, not ``Table.take``: Arrow's take on a chunked string column concatenates
        # every chunk first, which copies (and pages in) the whole corpus.
        rows = np.asarray(rows, dtype=np.int64)
        chunks = self.texts_table.to_batches()
        starts = np.cumsum([0] + [len(chunk) for chunk in chunks])
        which = np.searchsorted(starts, rows, side="right") - 1
        src: list[str | None] = [None] * len(rows)
        tgt: list[str | None] = [None] * len(rows)
        for chunk_index in np.unique(which):
            at = np.flatnonzero(which == chunk_index)
            taken = chunks[chunk_index].take(rows[at] - starts[chunk_index])
            for position, s, t in zip(
                at.tolist(), taken.column(0).to_pylist(), taken.column(1).to_pylist(), strict=True
            ):
                src[position], tgt[position] = s, t
        return src, tgt

    def teacher_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The teacher cache rows of the source and target sentences of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        src, tgt = read_rows(self.teacher_src, rows), read_rows(self.teacher_tgt, rows)
        return src.astype(np.int64), tgt.astype(np.int64)


__all__ = ["MIXED", "StreamedPairs", "write_stream"]
