"""Bitext mining metrics on precomputed embeddings: what the paper reports for Tatoeba, BUCC and FLORES.

All functions take aligned embeddings: row ``i`` of ``src`` and row ``i`` of ``tgt`` are translations
(the gold alignment is the identity, as in Tatoeba, BUCC.v2 and FLORES).

* **Cosine retrieval accuracy**, both ways: the share of sources whose nearest target (cosine) is their
  translation, and the same from the target side. The paper reports their mean for Tatoeba and BUCC;
  mteb reports only ``src -> tgt`` (``sentence1 -> sentence2``).
* **Weighted f1** exactly as mteb computes it (sklearn's ``f1_score(average="weighted")`` with the gold
  index as label and the retrieved index as prediction, ``zero_division=0``).
* **Ratio margin** retrieval (Artetxe & Schwenk 2019, LASER), with ``k = 4``::

      margin(x, y) = cos(x, y) / ( mean_{z in NN_k(x)} cos(x, z) / 2 + mean_{z in NN_k(y)} cos(y, z) / 2 )

  where ``NN_k(x)`` are the k nearest targets of source ``x`` and ``NN_k(y)`` the k nearest sources of
  target ``y``. As in LASER's ``xsim.py``, the candidates of ``x`` are its k nearest targets by cosine,
  and the one with the largest margin is retrieved.
* **xSIM error** (Heffernan et al. 2022, LASER's definition, used for FLORES-200): the share of sources
  whose margin-retrieved target is not their translation, i.e. ``1 - margin accuracy (src -> tgt)``.

Everything runs through :func:`imascl_ray.eval.chunked.chunked_topk`: two top-k passes (sources
against targets and back) give every number above without holding the full similarity matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from imascl_ray.eval.chunked import chunked_topk, l2_normalize

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

MARGIN_K = 4
"""Neighbours in the ratio margin, as LASER and the xSIM definition use."""
FEW_CANDIDATES = 10
"""Below this many pairs (so candidates per direction), a retrieval accuracy says little: chance is 1/n."""


def few_candidates_warning(pair_counts: Mapping[str, int]) -> str | None:
    """One line saying which language pairs have fewer than :data:`FEW_CANDIDATES` pairs, or None.

    With ``n`` pairs each source chooses among ``n`` targets, so an accuracy over 4 pairs moves in steps
    of 25 points and a random guess scores 1/4: such a number should not be read as a model's quality.
    """
    few = {pair: count for pair, count in pair_counts.items() if count < FEW_CANDIDATES}
    if not few:
        return None
    listed = ", ".join(f"{pair} ({count})" for pair, count in few.items())
    return (
        f"warning: fewer than {FEW_CANDIDATES} candidates per direction for {listed}: the accuracy "
        f"means little there (a random guess scores 1/n); evaluate on more pairs"
    )


def weighted_classification_scores(
    predictions: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """Precision, recall, f1 (support-weighted over gold labels) and accuracy, as mteb reports them.

    The same numbers (to float rounding) as ``sklearn.metrics.{precision,recall,f1}_score(gold, predictions,
    average="weighted", zero_division=0)`` and ``accuracy_score`` return, which is what mteb's
    ``AbsTaskBitextMining._compute_metrics`` calls, without sklearn's per-call overhead. For a class
    ``c`` with ``tp`` hits, ``p`` predictions and ``t`` gold occurrences: precision ``tp / p``, recall
    ``tp / t``, f1 ``2 tp / (p + t)`` (0 where undefined); each is averaged with weights ``t``.
    """
    pred = np.asarray(predictions, dtype=np.int64)
    true = np.asarray(gold, dtype=np.int64)
    if pred.shape != true.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and gold {true.shape} must be equal-length vectors")
    if true.size == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    offset = min(int(pred.min()), int(true.min()))
    pred, true = pred - offset, true - offset
    size = int(max(pred.max(), true.max())) + 1
    hits = true[pred == true]
    tp = np.bincount(hits, minlength=size).astype(np.float64)
    predicted = np.bincount(pred, minlength=size).astype(np.float64)
    support = np.bincount(true, minlength=size).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0)
    total = support.sum()
    return {
        "precision": float((precision * support).sum() / total),
        "recall": float((recall * support).sum() / total),
        "f1": float((f1 * support).sum() / total),
        "accuracy": float(tp.sum() / true.size),
    }


def ratio_margin_choice(
    candidate_sims: torch.Tensor,
    candidate_ids: torch.Tensor,
    query_knn_mean: torch.Tensor,
    key_knn_mean: torch.Tensor,
) -> torch.Tensor:
    """For each query, the candidate with the largest ratio margin (LASER's ``score_candidates``).

    Args:
        candidate_sims: ``[n, k]`` cosines of each query with its k nearest keys.
        candidate_ids: ``[n, k]`` the indices of those keys.
        query_knn_mean: ``[n]`` mean cosine of each query with its k nearest keys.
        key_knn_mean: ``[m]`` mean cosine of each key with its k nearest queries.

    Returns:
        ``[n]`` the chosen key index per query.
    """
    denominator = (query_knn_mean.unsqueeze(1) + key_knn_mean[candidate_ids]) / 2
    margins = candidate_sims / denominator
    best = margins.argmax(dim=1, keepdim=True)
    return torch.gather(candidate_ids, 1, best).squeeze(1)


def bitext_scores(
    src: np.ndarray | torch.Tensor,
    tgt: np.ndarray | torch.Tensor,
    *,
    k: int = MARGIN_K,
    device: str | torch.device | None = None,
    query_chunk: int | None = None,
    key_chunk: int | None = None,
) -> dict[str, float]:
    """Every bitext number for aligned ``src`` / ``tgt`` embeddings (``[n, d]`` each, row i <-> row i).

    Returns a flat dict: ``accuracy`` (mean of both directions, the paper's number),
    ``accuracy_src_to_tgt``, ``accuracy_tgt_to_src``, ``f1_src_to_tgt`` / ``f1_tgt_to_src``
    (mteb's weighted f1), ``margin_accuracy`` (mean of both directions) with its two directions,
    ``xsim_error`` (``src -> tgt``, LASER's definition), ``xsim_error_tgt_to_src`` and ``n``.
    Embeddings need not be normalised; cosine similarity is used.
    """
    source = l2_normalize(src)
    target = l2_normalize(tgt)
    n = source.shape[0]
    if target.shape[0] != n:
        raise ValueError(f"aligned embeddings needed: {n} sources but {target.shape[0]} targets")
    if n == 0:
        raise ValueError("no pairs to evaluate")
    chunks = {"query_chunk": query_chunk, "key_chunk": key_chunk, "device": device}
    sims_st, ids_st = chunked_topk(source, target, k, **chunks)
    sims_ts, ids_ts = chunked_topk(target, source, k, **chunks)
    gold = np.arange(n)
    cos_st = ids_st[:, 0].numpy()
    cos_ts = ids_ts[:, 0].numpy()
    mean_st = sims_st.mean(dim=1)
    mean_ts = sims_ts.mean(dim=1)
    margin_st = ratio_margin_choice(sims_st, ids_st, mean_st, mean_ts).numpy()
    margin_ts = ratio_margin_choice(sims_ts, ids_ts, mean_ts, mean_st).numpy()
    fwd = weighted_classification_scores(cos_st, gold)
    bwd = weighted_classification_scores(cos_ts, gold)
    margin_fwd = float((margin_st == gold).mean())
    margin_bwd = float((margin_ts == gold).mean())
    return {
        "accuracy": (fwd["accuracy"] + bwd["accuracy"]) / 2,
        "accuracy_src_to_tgt": fwd["accuracy"],
        "accuracy_tgt_to_src": bwd["accuracy"],
        "f1_src_to_tgt": fwd["f1"],
        "f1_tgt_to_src": bwd["f1"],
        "margin_accuracy": (margin_fwd + margin_bwd) / 2,
        "margin_accuracy_src_to_tgt": margin_fwd,
        "margin_accuracy_tgt_to_src": margin_bwd,
        "xsim_error": 1.0 - margin_fwd,
        "xsim_error_tgt_to_src": 1.0 - margin_bwd,
        "n": n,
    }


def nearest_neighbours(
    queries: np.ndarray | torch.Tensor,
    keys: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``[n]`` index of each query's nearest key by cosine similarity (chunked)."""
    _, ids = chunked_topk(l2_normalize(queries), l2_normalize(keys), 1, device=device)
    return ids[:, 0].numpy()


def margin_neighbours(
    queries: np.ndarray | torch.Tensor,
    keys: np.ndarray | torch.Tensor,
    *,
    k: int = MARGIN_K,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``[n]`` index of each query's ratio-margin nearest key (k nearest candidates, LASER)."""
    q, kk = l2_normalize(queries), l2_normalize(keys)
    sims_qk, ids_qk = chunked_topk(q, kk, k, device=device)
    sims_kq, _ = chunked_topk(kk, q, k, device=device)
    return ratio_margin_choice(sims_qk, ids_qk, sims_qk.mean(dim=1), sims_kq.mean(dim=1)).numpy()


def retrieval_accuracy(
    src: np.ndarray | torch.Tensor,
    tgt: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device | None = None,
) -> float:
    """Cosine nearest-neighbour accuracy averaged over both directions (the validation number)."""
    gold = np.arange(l2_normalize(src).shape[0])
    fwd = (nearest_neighbours(src, tgt, device=device) == gold).mean()
    bwd = (nearest_neighbours(tgt, src, device=device) == gold).mean()
    return float((fwd + bwd) / 2)


def xsim_error(
    src: np.ndarray | torch.Tensor,
    tgt: np.ndarray | torch.Tensor,
    *,
    k: int = MARGIN_K,
    device: str | torch.device | None = None,
) -> float:
    """LASER's xSIM error rate ``src -> tgt``: share of sources whose margin neighbour is wrong."""
    gold = np.arange(l2_normalize(src).shape[0])
    return float((margin_neighbours(src, tgt, k=k, device=device) != gold).mean())
