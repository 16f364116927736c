"""The maths every loss shares, on plain tensors: cosines, soft labels, and one soft cross-entropy.

Every contrastive loss of :mod:`imascl_ray.losses` is a sum of :func:`soft_cross_entropy` terms
(``-w * log_softmax(q k^T / tau)`` over a block of queries) and :func:`contrastive_sums` puts those terms
together for one block of rows, so the single-process form and the distributed *local* form (a rank's
own rows and columns against the gathered batch) are the same code. All of it runs in float32 (float64
stays float64) even under bf16/fp16 autocast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

LabelKind = Literal["hard", "priority", "average"]
LABEL_KINDS: tuple[str, ...] = ("hard", "priority", "average")

_F = TypeVar("_F", bound=Callable[..., Tensor])


def full_precision(function: _F) -> _F:
    """Run ``function`` with autocast off and half-precision tensor arguments upcast to float32.

    Under autocast a float32 matmul would be cast back to bf16/fp16; softmax over logits of magnitude
    ``1/tau`` (100 for tau = 0.01) needs float32 to keep the loss and its gradient meaningful.
    """

    def upcast(value: object) -> object:
        if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
            return value.float()
        return value

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> Tensor:
        device_type = next((v.device.type for v in (*args, *kwargs.values()) if isinstance(v, Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return function(*(upcast(a) for a in args), **{k: upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def _check_tau(tau: float, name: str = "tau") -> None:
    if not tau > 0:
        raise ValueError(f"{name} must be positive, got {tau}")


def cosine_matrix(queries: Tensor, keys: Tensor) -> Tensor:
    """``cos(queries_i, keys_j)`` as a ``[len(queries), len(keys)]`` matrix (inputs need not be unit-norm)."""
    return F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T


@full_precision
def label_logits(
    anchor_queries: Tensor,
    anchor_keys: Tensor,
    other_queries: Tensor | None = None,
    other_keys: Tensor | None = None,
    *,
    kind: LabelKind,
    tau: float,
) -> Tensor:
    """The teacher logits whose row softmax gives the soft labels, for a block of rows.

    Priority (Eq. 4): ``cos(g(a_i), g(a_j)) / tau``. Average (Eq. 5): the mean of the anchor-side and the
    other-side cosines, over ``tau``. Rows are the ``*_queries`` (a block of the batch), columns the
    ``*_keys`` (the whole batch), so a distributed rank can build only its own rows.

    Args:
        anchor_queries: ``[B, d_g]`` teacher embeddings of the anchor-language sentences of the rows.
        anchor_keys: ``[N, d_g]`` the same for the whole batch.
        other_queries, other_keys: the other language's teacher embeddings; required for ``average``.
        kind: ``priority`` or ``average``.
        tau: the teacher temperature.
    Returns:
        ``[B, N]`` logits.
    """
    _check_tau(tau, "teacher tau")
    similarity = cosine_matrix(anchor_queries, anchor_keys)
    if kind == "average":
        if other_queries is None or other_keys is None:
            raise ValueError("average labels need the teacher embeddings of both languages")
        similarity = (similarity + cosine_matrix(other_queries, other_keys)) / 2
    elif kind != "priority":
        raise ValueError(f"label_logits is for 'priority' or 'average' labels, got {kind!r}")
    return similarity / tau


@full_precision
def soft_labels(
    teacher_anchor: Tensor,
    teacher_other: Tensor | None = None,
    *,
    kind: LabelKind,
    tau: float,
) -> Tensor:
    """Soft labels ``w(i, j)`` for a batch of ``N`` pairs; every row sums to 1.

    * ``hard`` (Eq. 3): the identity; only the translation is a positive.
    * ``priority`` (Eq. 4): ``softmax_j cos(g(a_i), g(a_j)) / tau`` over the anchor language's teacher
      embeddings ``a`` (the pair's higher-priority language).
    * ``average`` (Eq. 5): ``softmax_j (cos(g(s_i), g(s_j)) + cos(g(t_i), g(t_j))) / (2 tau)``.

    Args:
        teacher_anchor: ``[N, d_g]`` teacher embeddings of the anchor side (any norm).
        teacher_other: ``[N, d_g]`` teacher embeddings of the other side; required for ``average``.
        kind: ``hard``, ``priority`` or ``average``.
        tau: the teacher temperature (the paper uses the student's tau, 0.1).
    Returns:
        ``[N, N]`` float32 (float64 for float64 input) labels.
    """
    if kind == "hard":
        n = teacher_anchor.shape[0]
        return torch.eye(n, dtype=teacher_anchor.dtype, device=teacher_anchor.device)
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; expected one of {', '.join(LABEL_KINDS)}")
    logits = label_logits(teacher_anchor, teacher_anchor, teacher_other, teacher_other, kind=kind, tau=tau)
    return logits.softmax(dim=1)


@full_precision
def soft_cross_entropy(
    queries: Tensor,
    keys: Tensor,
    targets: Tensor,
    *,
    tau: float,
    margin: float = 0.0,
    offset: int = 0,
) -> Tensor:
    """``-sum_ij targets_ij * log_softmax_j(cos(q_i, k_j) / tau)``: the primitive of every loss here.

    Args:
        queries: ``[B, d]`` embeddings, each the anchor of one softmax.
        keys: ``[N, d]`` embeddings the softmax runs over.
        targets: ``[B, N]`` label weights.
        tau: the student temperature.
        margin: an additive margin (LaBSE) subtracted from the cosine of each query's own translation,
            the key at ``offset + i``; 0 disables it.
        offset: where the queries' own rows start among the keys (a rank's offset in the global batch).
    Returns:
        A scalar: the *sum* over the block (callers divide by the global batch size).
    """
    _check_tau(tau)
    if targets.shape != (queries.shape[0], keys.shape[0]):
        raise ValueError(
            f"targets must be [{queries.shape[0]}, {keys.shape[0]}] for {queries.shape[0]} queries and "
            f"{keys.shape[0]} keys, got {list(targets.shape)}"
        )
    logits = cosine_matrix(queries, keys)  # one name, so each step's input is freed as it goes
    if margin:
        rows = torch.arange(queries.shape[0], device=logits.device)
        logits = logits.index_put((rows, rows + offset), logits[rows, rows + offset] - margin)
    logits = logits / tau
    if targets.requires_grad:  # labels never need a gradient; anything else takes plain autograd
        return -(targets * logits.log_softmax(dim=1)).sum()
    return _SoftCrossEntropySum.apply(logits, targets)


def sum_of_products(a: Tensor, b: Tensor, rows: int = 1024) -> Tensor:
    """``(a * b).sum()`` over blocks of rows, so no third ``[B, N]`` matrix is ever allocated."""
    return torch.stack([(a[i : i + rows] * b[i : i + rows]).sum() for i in range(0, a.shape[0], rows)]).sum()


class _SoftCrossEntropySum(torch.autograd.Function):
    """``-sum_ij t_ij log_softmax_j(z)_ij`` that keeps one ``[B, N]`` block for backward instead of two.

    Plain autograd saves both the log-probabilities and the targets. The gradient has a closed form,
    ``dL/dz_ij = rowsum(t)_i * softmax(z)_ij - t_ij``, so forward computes it (from the log-probabilities
    it already has, in place) and saves only that: the labels are not kept alive for backward, the
    loss's saved memory halves in the full and the local form alike, and backward is one scale. The
    targets must not need a gradient.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # type: ignore[override]
        log_probs = logits.log_softmax(dim=1)
        loss = -sum_of_products(targets, log_probs)
        if ctx.needs_input_grad[0]:
            gradient = log_probs.exp_().mul_(targets.sum(dim=1, keepdim=True)).sub_(targets)
            ctx.save_for_backward(gradient)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return gradient * grad_loss, None


def contrastive_sums(
    src_queries: Tensor,
    tgt_queries: Tensor,
    src_all: Tensor,
    tgt_all: Tensor,
    row_labels: Tensor,
    col_labels: Tensor,
    *,
    offset: int,
    tau: float,
    margin: float = 0.0,
    negatives_all: Tensor | None = None,
    monolingual: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``(sum of L_cross terms, sum of L_mono terms or None)`` of one block of rows of the batch.

    The block holds pairs ``offset .. offset + B - 1`` of a batch of ``N`` (``B = N``, ``offset = 0``:
    the whole batch). Its rows of ``L_row`` (Eq. 2), its columns of ``L_col`` (Eq. 6) and, with
    ``monolingual``, its columns of ``L_mono`` (Eq. 7) cost ``B x N`` logits; summed over the blocks that
    tile the batch and divided by ``N``, they are the whole batch's losses (value and gradients).

    Args:
        src_queries, tgt_queries: ``[B, d]`` the block's student embeddings.
        src_all, tgt_all: ``[N, d]`` the whole batch's (the block's rows included, at ``offset``).
        row_labels: ``[B, N]`` the block's rows of ``w``: ``w[offset:offset+B, :]``.
        col_labels: ``[B, N]`` the block's columns of ``w``, transposed: ``w[:, offset:offset+B].T``.
        offset: the block's first row in the batch.
        tau: the student temperature; ``margin``: LaBSE's additive margin on each translation's cosine.
        negatives_all: ``[M, d]`` extra target-language sentences (mined hard negatives): they join every
            row's softmax with label 0.
        monolingual: also return the ``L_mono`` sum (TMS).
    """
    n = src_all.shape[0]
    rows = src_queries.shape[0]
    if tgt_all.shape[0] != n or tgt_queries.shape[0] != rows or row_labels.shape != (rows, n):
        raise ValueError(
            f"expected [B, d] queries, [N, d] batches and [B, N] labels; got src {list(src_queries.shape)}, "
            f"tgt {list(tgt_queries.shape)}, batches {list(src_all.shape)} / {list(tgt_all.shape)} and "
            f"labels {list(row_labels.shape)}"
        )
    keys, targets = tgt_all, row_labels
    if negatives_all is not None:  # candidates no one targets: zero label columns
        keys = torch.cat([tgt_all, negatives_all])
        targets = torch.cat([row_labels, row_labels.new_zeros(rows, negatives_all.shape[0])], dim=1)
    cross = soft_cross_entropy(src_queries, keys, targets, tau=tau, margin=margin, offset=offset)
    cross = cross + soft_cross_entropy(
        tgt_queries, src_all, col_labels, tau=tau, margin=margin, offset=offset
    )
    if not monolingual:
        return cross, None
    mono = soft_cross_entropy(src_queries, src_all, col_labels, tau=tau) + soft_cross_entropy(
        tgt_queries, tgt_all, col_labels, tau=tau
    )
    return cross, mono
