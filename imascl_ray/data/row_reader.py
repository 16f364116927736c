"""Rows of a memory-mapped ``.npy`` array read with ``pread``: a worker's memory follows the rows it reads.

Indexing a memory-mapped array (``array[rows]``) faults each touched page into the process, and Linux's
fault-around maps the cached pages next to it too (``fault_around_bytes``, 64 KiB): a few thousand
random rows of a teacher cache the driver has just written map most of the file into every worker's
resident set (``benchmarks/corpus_scale.py``: +245 MiB of file-backed pages in each worker from 10^5 to
10^6 pairs, with anonymous memory flat). Those pages are clean and reclaimable, but they count in RSS
and a scheduler or an out-of-memory killer reads RSS. ``os.pread`` copies the bytes out of the page
cache instead: nothing is mapped, and the process holds only the rows it asked for. NumPy has no such
read (``np.fromfile`` reads one contiguous run), hence this module.
"""

from __future__ import annotations

import os

import numpy as np


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` (a new array) for an array from ``np.load(path, mmap_mode="r")``.

    ``rows``: integer indices along the first axis (negative ones count from the end, as NumPy's).
    A memory-mapped, C-contiguous array is read row by row with ``os.pread`` from its file; any other
    array (in memory, or a view) is indexed as usual. Raises ``IndexError`` for a row out of range.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    length = array.shape[0]
    if rows.size and (rows.min() < -length or rows.max() >= length):
        raise IndexError(f"row out of range for an array of {length} rows")
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or filename is None or not array.flags.c_contiguous:
        return np.array(array[rows])
    rows = np.where(rows < 0, rows + length, rows)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    if not len(rows):
        return out
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    buffer = out.reshape(len(rows), -1).view(np.uint8)
    descriptor = os.open(filename, os.O_RDONLY)
    try:
        for k, row in enumerate(rows.tolist()):
            chunk = os.pread(descriptor, row_bytes, array.offset + row * row_bytes)
            if len(chunk) != row_bytes:
                raise OSError(f"{filename}: row {row} is cut short ({len(chunk)} of {row_bytes} bytes)")
            buffer[k] = np.frombuffer(chunk, dtype=np.uint8)
    finally:
        os.close(descriptor)
    return out
