"""Which worker failures a restart can cure, and stopping at once on the others.

Ray Train restarts a failed worker group (from the last checkpoint) up to ``FailureConfig.max_failures``
times, whatever failed. That is right for a worker that crashed, ran out of memory or lost its node, and
wrong for an error in the run's input: a damaged checkpoint on ``--resume``, a corpus or config that the
worker cannot use. Each restart pays the start-up again, reads the same input, fails the same way, and
the run ends in a traceback after ``max_failures + 1`` tries (``-1``: never).

Ray 2.60's :class:`~ray.train.v2.api.config.FailureConfig` cannot be told which errors to retry, but its
controller calls a :class:`ray.train.UserCallback`'s ``after_exception`` with every worker's exception
before it decides, and an error raised by a callback is a ``ControllerError``, which it never retries.
So :class:`StopOnInputError` raises the worker's :class:`~imascl_ray.errors.InputError` there; ``fit()``
raises ``ControllerError(InputError)`` on the driver, and :func:`input_error_of` hands the
``InputError`` back, which the command line prints as one line (exit code 2) and the tracked MLflow run
records as FAILED. Any other worker error is left to the failure policy: restarted and resumed.

Ray would also print that error twice as a traceback (the worker's "Error in training function", the
controller's "Error in control loop iteration"): :class:`_DropInputErrors` drops exactly those
records, no other.
"""

from __future__ import annotations

import logging
import sys

import ray.train

from imascl_ray.errors import InputError

#: Ray Train 2.60's loggers that print a training function's error and a callback's error with their
#: traceback (logger names, not imports: ``tests/test_tune_ray_pins.py`` checks they still exist).
WORKER_ERROR_LOGGER = "ray.train.v2._internal.util"
CONTROLLER_LOGGER = "ray.train.v2._internal.execution.controller.controller"


class _DropInputErrors(logging.Filter):
    """Drops a log record about an :class:`InputError` (the one being raised or handled)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not isinstance(error, InputError)


def quiet_input_errors(logger_name: str) -> None:
    """Put :class:`_DropInputErrors` on a logger of this process, once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, _DropInputErrors) for existing in logger.filters):
        logger.addFilter(_DropInputErrors())


class StopOnInputError(ray.train.UserCallback):
    """Runs on the Ray Train controller: a worker's :class:`InputError` ends the run, unretried."""

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        for _, error in sorted(worker_exceptions.items()):
            if isinstance(error, InputError):
                quiet_input_errors(CONTROLLER_LOGGER)
                raise error


def input_error_of(failure: BaseException) -> InputError | None:
    """The :class:`InputError` behind a ``TrainingFailedError`` of ``fit()``, if that is what it was."""
    if isinstance(failure, InputError):
        return failure
    if isinstance(failure, ray.train.ControllerError):
        return input_error_of(failure.controller_failure)
    if isinstance(failure, ray.train.WorkerGroupError):
        found = [input_error_of(error) for error in failure.worker_failures.values()]
        return next((error for error in found if error is not None), None)
    return None


def train_worker(payload: dict) -> dict:
    """:func:`imascl_ray.train.worker.train_worker`, with the worker's own traceback of an
    :class:`InputError` left out of the run's output (the driver prints its one line)."""
    from imascl_ray.train.worker import train_worker as run_worker

    quiet_input_errors(WORKER_ERROR_LOGGER)
    return run_worker(payload)
