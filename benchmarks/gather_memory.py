"""Memory and time of the loss over gathered negatives: the full (``N x N``) and the local (``B x N``) form.

Two gloo processes on CPU (``W = 2``, one torch thread each) each hold ``B = N / W`` pairs of random unit
student embeddings (``d = 384``, leaves with gradient) and the global batch's teacher embeddings (as the
training loop looks them up in the cache), gather them (:func:`imascl_ray.distributed.gather_inputs`) and
run :class:`imascl_ray.losses.SoftContrastiveLoss` forward and backward: Priority labels, TMS
(``lam = 0.1``), ``tau = 0.1``, teacher ``tau = 0.05``. A global
batch of ``N`` pairs is ``2N`` embeddings: the largest size, 8192 pairs, is 16,384 embeddings.

Measured per rank, for each form and ``N`` (a fresh pair of processes per ``N``):

* ``wide_mib``: the ``N``-wide matrices that the autograd graph saves for backward, counted by a
  ``saved_tensors_hooks`` pair (each storage once): one per soft cross-entropy term (rows, columns and
  the 2 monolingual terms), ``[N, N]`` in the full form and ``[B, N]`` in the local one. The loss keeps
  the gradient of its logits, computed in forward, and neither the log-probabilities nor the soft
  labels (:class:`imascl_ray.losses.maths._SoftCrossEntropySum`). What the local form divides by ``W``;
* ``saved_mib``: everything the graph saves;
* ``peak_rss_mib``: the rise of the process's peak resident memory (``ru_maxrss``) over its resident
  memory before the step (the local form runs first, so the full form's figure is its own peak). The
  ranks run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns every freed matrix to the system
  at once instead of keeping some in its heap, where they would count as resident;
* ``seconds``: forward + backward, the slower rank, median of interleaved repeats.

Target: ``wide_mib`` of the local form <= 1/W of the full form's. The last line of stdout is one JSON
object.

    python benchmarks/gather_memory.py --quick      # N = 2048, 8192 pairs; < 3 minutes on 2 cores
    python benchmarks/gather_memory.py              # N = 1024 ... 8192 pairs, 3 timed repeats
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import emit, log, machine, median, rounded, set_test_environment

WORLD = 2
DIM = 384
TARGET = 1.0 / WORLD


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _rank(rank: int, init_file: str, out_dir: str, pairs: int, repeats: int) -> None:
    """One rank: memory of each form (local first), then interleaved timing; writes ``rank<r>.json``."""
    import torch
    import torch.distributed as dist

    from imascl_ray.distributed import gather_inputs
    from imascl_ray.losses import SoftContrastiveLoss

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    rows = pairs // WORLD
    generator = torch.Generator().manual_seed(rank)
    shared = torch.Generator().manual_seed(1234)  # the same teacher rows on every rank
    teacher_anchor = torch.nn.functional.normalize(torch.randn(pairs, DIM, generator=shared), dim=1)

    def leaves(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        src = torch.nn.functional.normalize(torch.randn(n, DIM, generator=generator), dim=1)
        tgt = torch.nn.functional.normalize(src + 0.3 * torch.randn(n, DIM, generator=generator), dim=1)
        return src.requires_grad_(), tgt.requires_grad_()

    def step(
        local: bool, saved: dict[int, tuple[int, tuple[int, ...], bool]] | None = None, warmup: bool = False
    ) -> float:
        """Forward + backward; ``saved`` collects (bytes, shape) of each storage saved for backward
        (sizes only: holding the tensors would keep them alive through backward and raise the peak).
        ``warmup``: a 4-pair batch, to initialise gloo and autograd before anything is measured."""
        src, tgt = leaves(2 if warmup else rows)
        teacher = teacher_anchor[: 2 * WORLD] if warmup else teacher_anchor
        dist.barrier()
        start = time.perf_counter()

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if saved is not None:
                storage = tensor.untyped_storage()
                saved[storage.data_ptr()] = (storage.nbytes(), tuple(tensor.shape), tensor.requires_grad)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = SoftContrastiveLoss("priority", tau=0.1, teacher_tau=0.05, lam=0.1, local=local)
            value = loss(gather_inputs(src, tgt, teacher)).value
        value.backward()
        elapsed = torch.tensor(time.perf_counter() - start)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the step is as slow as its slower rank
        return float(elapsed)

    result: dict[str, Any] = {"rank": rank, "pairs": pairs, "rows_per_rank": rows}
    step(True, warmup=True)
    step(False, warmup=True)
    for form, local in (("local", True), ("full", False)):  # smaller first: ru_maxrss only rises
        saved: dict[int, tuple[int, tuple[int, ...], bool]] = {}
        before = _rss_kib()
        dist.barrier()
        step(local, saved)
        peak = _maxrss_kib()
        # [B, N] or [N, N] matrices (not [d, N]: transposed embeddings).
        wide = [
            (size, shape)
            for size, shape, _ in saved.values()
            if len(shape) == 2 and shape[1] == pairs and shape[0] in (rows, pairs)
        ]
        result[form] = {
            "wide_mib": sum(size for size, _ in wide) / 2**20,
            "saved_mib": sum(size for size, _, _ in saved.values()) / 2**20,
            "peak_rss_mib": max(0, peak - before) / 1024,
            "wide_shapes": sorted(str(list(shape)) for _, shape in wide),
        }
    times: dict[str, list[float]] = {"local": [], "full": []}
    for _ in range(repeats):
        for form in times:
            times[form].append(step(form == "local"))
    for form, values in times.items():
        result[form]["seconds"] = median(values)
        result[form]["repeats"] = len(values)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@contextlib.contextmanager
def _ranks_return_freed_memory() -> Iterator[None]:
    """Spawn the ranks with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc reads it at start), and only them."""
    before = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = before or "65536"
    try:
        yield
    finally:
        if before is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]


def measure(pairs: int, repeats: int) -> list[dict[str, Any]]:
    """Both ranks' figures for a global batch of ``pairs`` pairs (a fresh pair of processes)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="imascl-gather-") as folder, _ranks_return_freed_memory():
        mp.start_processes(
            _rank,
            args=(str(Path(folder) / "init"), folder, pairs, repeats),
            nprocs=WORLD,
            join=True,
            start_method="spawn",
        )
        return [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(WORLD)]


def summarise(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Per form: the larger of the two ranks' memory figures, the slower rank's time, and the ratios."""
    row: dict[str, Any] = {"pairs": ranks[0]["pairs"], "embeddings": 2 * ranks[0]["pairs"]}
    for form in ("full", "local"):
        row[form] = {
            key: rounded(max(r[form][key] for r in ranks), 4)
            for key in ("wide_mib", "saved_mib", "peak_rss_mib", "seconds")
        }
        row[form]["wide_shapes"] = ranks[0][form]["wide_shapes"]
    full, local = row["full"], row["local"]
    row["local_over_full"] = {
        key: rounded(local[key] / full[key]) if full[key] else None
        for key in ("wide_mib", "saved_mib", "peak_rss_mib", "seconds")
    }
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="N = 2048, 8192 pairs, 1 repeat: < 3 min")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (for tests)")
    parser.add_argument("--sizes", type=int, nargs="+", help="global batch sizes in pairs (multiples of 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each form")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [32, 64] if args.smoke else [2048, 8192] if args.quick else [1024, 2048, 4096, 8192]
    if args.repeats is None:
        args.repeats = 1 if args.smoke or args.quick else 3
    if any(size % WORLD for size in args.sizes):
        parser.error(f"--sizes must be multiples of {WORLD}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    started = time.perf_counter()
    rows = []
    for pairs in args.sizes:
        log(f"N = {pairs} pairs ({2 * pairs} embeddings) on {WORLD} gloo processes")
        rows.append(summarise(measure(pairs, args.repeats)))
        log(f"  {json.dumps({k: rows[-1][k] for k in ('full', 'local', 'local_over_full')})}")
    largest = rows[-1]
    result = {
        "benchmark": "gather_memory",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "world_size": WORLD,
        "dim": DIM,
        "loss": "soft, priority labels, TMS lam=0.1, teacher rows of the global batch",
        "sizes": rows,
        "largest_pairs": largest["pairs"],
        "local_over_full_wide": largest["local_over_full"]["wide_mib"],
        "local_over_full_saved": largest["local_over_full"]["saved_mib"],
        "local_over_full_peak_rss": largest["local_over_full"]["peak_rss_mib"],
        "local_over_full_seconds": largest["local_over_full"]["seconds"],
        "target_local_over_full_wide": TARGET,
        "target_met": all(row["local_over_full"]["wide_mib"] <= TARGET + 1e-9 for row in rows),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
