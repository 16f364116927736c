"""Semantic textual similarity: Spearman correlation of cosine similarities with gold scores.

This is the number the paper reports for STS (mteb's ``cosine_spearman``). mteb rescales gold scores
linearly to [0, 1] first, which leaves a rank correlation unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from imascl_ray.eval.chunked import l2_normalize

if TYPE_CHECKING:
    from collections.abc import Sequence


def pairwise_cosine(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[n]`` cosine similarity of row ``i`` of ``a`` with row ``i`` of ``b`` (float64)."""
    left, right = l2_normalize(a).double(), l2_normalize(b).double()
    if left.shape != right.shape:
        raise ValueError(f"paired embeddings needed, got {tuple(left.shape)} and {tuple(right.shape)}")
    return (left * right).sum(dim=1).numpy()


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (``scipy.stats.rankdata`` "average")."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_of_position = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    ends = np.r_[starts[1:], values.size]
    mean_rank_of_run = (starts + ends + 1) / 2.0  # positions start..end-1 are ranks start+1..end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank_of_run[run_of_position]
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks; ``nan`` when either side is constant."""
    rx, ry = average_ranks(np.asarray(x)), average_ranks(np.asarray(y))
    if rx.shape != ry.shape or rx.size < 2:
        raise ValueError(f"two equal-length samples of 2+ values needed, got {rx.size} and {ry.size}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if denominator == 0:
        return float("nan")
    return float((dx * dy).sum() / denominator)


def sts_spearman(
    emb1: np.ndarray | torch.Tensor,
    emb2: np.ndarray | torch.Tensor,
    gold_scores: Sequence[float] | np.ndarray,
) -> float:
    """Spearman correlation between ``cos(emb1[i], emb2[i])`` and ``gold_scores[i]``."""
    return spearman(pairwise_cosine(emb1, emb2), np.asarray(gold_scores, dtype=np.float64))
