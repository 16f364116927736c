"""SIGINT and SIGTERM as one exception, :class:`Interrupted`, that every layer handles the same way.

Ctrl-C sends SIGINT; ``ray job stop``, ``kill`` and a preempted node send SIGTERM. Left to their
defaults they end a run in three different ways: Ray's driver turns SIGTERM into ``sys.exit(1)`` (or
kills its local cluster and exits 1); Ray Train's ``fit()`` and Tune's ``Tuner.fit()`` put their own
SIGINT handlers in place, which abort the run and return or exit with no word to the caller. The MLflow
run stays RUNNING and the exit code says "failed".

So the command line installs :func:`raise_on_signals` (again after ``ray.init``, which replaces the
SIGTERM handler), and long Ray calls run through :func:`call_interruptibly`, in a helper thread, where
Ray installs no handler of its own. The signal then raises :class:`Interrupted` in the main thread:
the tracked run ends KILLED (:class:`imascl_ray.tracking.TrackedRun`), Ray shuts down, and the process
prints ``interrupted`` and exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). Checkpoints are
Ray Train's, written as the run went: ``--resume`` continues from the last one. A second signal while
the first is being handled is ignored (one line says so), a third ends the process at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """The process was sent SIGINT or SIGTERM. A ``KeyboardInterrupt``, so code that already treats
    Ctrl-C as "stop now, keep what is written" treats SIGTERM the same."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


def _handle(signum: int, frame: Any) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)
    if len(_received) == 2:
        print(
            f"{signal.Signals(signum).name} again: already stopping (closing the MLflow run, keeping the "
            "checkpoints); once more ends at once",
            file=sys.stderr,
            flush=True,
        )
        return
    os._exit(128 + signum)


def raise_on_signals() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread from now on (a no-op elsewhere:
    only the main thread may set handlers, and a Tune trial's thread gets its stop from Tune)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def reset() -> None:
    """Forget signals received (tests that interrupt more than once in one process)."""
    _received.clear()


def call_interruptibly(function: Callable[[], T]) -> T:
    """``function()``, run in a helper thread while the main thread waits for it, so that a signal
    reaches :func:`raise_on_signals`' handler instead of the handler Ray Train's or Tune's ``fit()``
    installs when called from the main thread. Returns its result or raises its error; an
    :class:`Interrupted` leaves the helper thread behind (a daemon: Ray's shutdown ends its calls).
    Outside the main thread (a Tune trial), simply ``function()``."""
    if threading.current_thread() is not threading.main_thread():
        return function()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the main thread, never printed by the thread
            outcome["error"] = error

    worker = threading.Thread(target=target, name="imascl-ray-fit", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.5)  # the main thread runs signal handlers between these waits
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
