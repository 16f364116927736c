"""The quality study's statistics: mean and spread over seeds, and a paired difference with its t-interval.

Two arms trained at the same seeds (``schedule.seed``: the same batch order, the same dropout masks
where the models match) are paired: seed ``k`` of one arm is compared with seed ``k`` of the other, and
the interval is Student's t on those per-seed differences, ``mean ± t(0.975, n - 1) · sd / sqrt(n)``.
With 3 seeds that is ``± 2.48 sd``: wide, as 3 seeds are; pairing is what keeps it usable, since the
batch order moves both arms alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)``; the spread of a single value is 0."""
    if not values:
        raise ValueError("no values")
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def t_quantile(probability: float, dof: int) -> float:
    """Student's t quantile (scipy.stats.t.ppf)."""
    from scipy import stats

    return float(stats.t.ppf(probability, dof))


def paired_difference(
    first: Sequence[float], second: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """``first - second`` seed by seed: ``{"mean", "std", "n", "low", "high"}`` (a ``confidence`` t-interval
    of the mean difference; ``low``/``high`` are None for fewer than 2 pairs, where it has no width)."""
    if len(first) != len(second):
        raise ValueError(f"paired values need the same seeds: {len(first)} against {len(second)}")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    mean, spread = mean_std(differences)
    n = len(differences)
    low = high = None
    if n > 1:
        half = t_quantile(0.5 + confidence / 2, n - 1) * spread / math.sqrt(n)
        low, high = mean - half, mean + half
    return {"mean": mean, "std": spread, "n": n, "low": low, "high": high, "confidence": confidence}


def show_interval(entry: dict[str, Any], digits: int) -> str:
    """``+0.42 [-0.10, +0.95]`` (or ``+0.42`` with no interval)."""
    text = f"{entry['mean']:+.{digits}f}"
    if entry["low"] is not None:
        text += f" [{entry['low']:+.{digits}f}, {entry['high']:+.{digits}f}]"
    return text
