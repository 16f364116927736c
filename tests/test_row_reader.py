"""Rows of memory-mapped arrays read with ``pread`` (issue 26): the same values as indexing, and a worker's
resident memory does not take in the file around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imascl_ray.data.row_reader import read_rows
from imascl_ray.teacher import TeacherCache


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1000, 7), np.float16), ((1000,), np.int32), ((1000,), np.bool_), ((50, 3, 4), np.float32)],
)
def test_read_rows_equals_indexing(tmp_path, shape, dtype):
    array = (np.random.default_rng(0).random(shape) * 100).astype(dtype)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    rows = np.array([0, 5, -1, 3, 3, shape[0] - 1])
    read = read_rows(mapped, rows)
    assert read.dtype == array.dtype and np.array_equal(read, array[rows])
    assert read_rows(mapped, np.array([], dtype=np.int64)).shape == (0, *shape[1:])
    assert np.array_equal(read_rows(array, rows), array[rows])  # an in-memory array: plain indexing
    with pytest.raises(IndexError):
        read_rows(mapped, np.array([shape[0]]))


def rss_file_kib() -> int:
    """This process's file-backed resident pages (``RssFile`` of ``/proc/self/status``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_teacher_lookups_do_not_map_the_cache_into_the_process(tmp_path):
    """2,000 random rows of a 64 MiB cache the process just wrote (hot in the page cache, as a worker finds
    the driver's): indexing the mapping took in ~64 KiB around every row (Linux's fault-around), most of
    the file; reading the rows takes in nothing."""
    rows, dim = 1 << 16, 256  # 64 MiB of float32
    embeddings = np.lib.format.open_memmap(
        tmp_path / "embeddings.npy", mode="w+", dtype=np.float32, shape=(rows, dim)
    )
    embeddings[:] = np.random.default_rng(0).random((rows, dim), dtype=np.float32)
    embeddings.flush()
    del embeddings
    cache = TeacherCache(tmp_path, "test", np.load(tmp_path / "embeddings.npy", mmap_mode="r"))
    wanted = np.random.default_rng(1).integers(0, rows, size=2000)
    before = rss_file_kib()
    looked_up = cache.lookup(wanted)
    grown_mib = (rss_file_kib() - before) / 1024
    assert grown_mib < 4, f"the lookups mapped {grown_mib:.1f} MiB of the cache into the process"
    assert np.array_equal(looked_up.numpy(), np.asarray(cache.embeddings[wanted]))
