"""Batch assembly one step ahead, in a background thread: the next step's inputs are ready when it starts.

Before a step can encode, its inputs must be put together on the host: the rank's texts picked from the
corpus, the mined negatives' texts, the teacher rows looked up in the memory-mapped cache. None of that
depends on the model, so :func:`prefetched` does it for step ``k + 1`` in one worker thread while step
``k`` runs (the heavy part of a step, torch's kernels, releases the GIL).

What the steps see is unchanged: ``prepare(item, global_step)`` is a pure function of its arguments (the
negatives are drawn from a generator seeded by step and row; no torch random state is touched), the
items come in the same order, and nothing is carried between iterators, so a run resumed from a
checkpoint assembles exactly the batches it would have. At most one item is assembled ahead; an
iterator that is dropped (a new epoch starts) leaves at most one finished, unused assembly behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")

PREFETCH_ENV = "IMASCL_PREFETCH"
"""``0`` in the environment turns prefetching off (the steps then assemble their inputs inline)."""


def prefetch_executor() -> ThreadPoolExecutor:
    """The one background thread a loop assembles its batches in."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="imascl-prefetch")


def prefetched(
    items: Iterable[Item],
    prepare: Callable[[Item, int], Prepared],
    first_step: int,
    executor: ThreadPoolExecutor | None,
) -> Iterator[tuple[Item, Prepared]]:
    """``(item, prepare(item, first_step + k))`` for the k-th item of ``items``, in order.

    With an ``executor`` the next item is drawn and prepared in its thread while the caller works on
    the current one; without (None), inline, when asked for. Either way the same pairs come out, and an
    error raised by ``items`` or ``prepare`` reaches the caller at the item it belongs to.
    """
    iterator = iter(items)
    step = first_step

    def produce() -> tuple[Item, Prepared] | None:
        nonlocal step
        try:
            item = next(iterator)
        except StopIteration:
            return None
        prepared = prepare(item, step)
        step += 1
        return item, prepared

    if executor is None:
        while (pair := produce()) is not None:
            yield pair
        return
    pending = executor.submit(produce)
    while (pair := pending.result()) is not None:
        pending = executor.submit(produce)
        yield pair
