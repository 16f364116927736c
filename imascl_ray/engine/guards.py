"""Stop a run the moment its loss stops being a number, saying where and which term broke."""

from __future__ import annotations

import math
from collections.abc import Mapping


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and every loss term."""


def check_finite(step: int, terms: Mapping[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` unless every term (``{"loss": ..., "cross": ...}``) is finite."""
    if all(math.isfinite(value) for value in terms.values()):
        return
    listed = ", ".join(f"{name}={value}" for name, value in terms.items())
    bad = ", ".join(name for name, value in terms.items() if not math.isfinite(value))
    raise NonFiniteLossError(
        f"step {step}: non-finite loss ({listed}); the bad term(s): {bad}. Lower optim.lr, raise loss.tau, "
        "or use bf16/fp32 instead of fp16"
    )
