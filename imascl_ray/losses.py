"""Soft contrastive learning for multilingual sentence embeddings: labels and losses on plain tensors.

Notation (arXiv 2405.16155, Sec. 3). A batch holds ``N`` translation pairs ``(s_i, t_i)``. The student
``f`` embeds both sides; the frozen teacher ``g`` embeds them too. With ``cos`` the cosine similarity,

    sim_f(x, y) = cos(f(x), f(y)) / tau          sim_g(x, y) = cos(g(x), g(y)) / tau_teacher

* soft labels ``w(i, j)`` (a row-stochastic ``N x N`` matrix): hard (Eq. 3, the identity), Priority
  (Eq. 4, a row softmax of the anchor language's teacher similarities) or Average (Eq. 5, a row softmax of
  the mean of both languages' teacher similarities);
* ``L_row``  (Eq. 2) ``= -1/N sum_ij w(i,j) log softmax_n sim_f(s_i, t_n) |_{n=j}``: each source sentence
  spreads its probability over the targets as the labels say;
* ``L_col``  (Eq. 6) ``= -1/N sum_ij w(i,j) log softmax_n sim_f(s_n, t_j) |_{n=i}``: the same for each
  target over the sources; ``L_cross = L_row + L_col`` (summed, as in the paper and the authors' code);
* ``L_mono`` (Eq. 7) the same soft labels on ``sim_f(s, s)`` and ``sim_f(t, t)``, column-normalised;
* ``L = lambda * L_cross + L_mono`` (Eq. 8, "TMS");
* the embedding-MSE distillation baseline of Reimers & Gurevych (2020).

Every loss here is one primitive, :func:`soft_cross_entropy` (a sum of ``-w * log_softmax(q k^T / tau)``
over a block of queries), so the single-process form and the distributed *local* form (each rank computes
only its own rows and columns against the gathered batch, see :mod:`imascl_ray.distributed`) share the
same maths. All of it runs in float32 (float64 stays float64) even under bf16/fp16 autocast.
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


def _full_precision(function: _F) -> _F:
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


@_full_precision
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


@_full_precision
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


@_full_precision
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


def _sum_of_products(a: Tensor, b: Tensor, rows: int = 1024) -> Tensor:
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
        loss = -_sum_of_products(targets, log_probs)
        if ctx.needs_input_grad[0]:
            gradient = log_probs.exp_().mul_(targets.sum(dim=1, keepdim=True)).sub_(targets)
            ctx.save_for_backward(gradient)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        return gradient * grad_loss, None


def _check_pairs(src: Tensor, tgt: Tensor, labels: Tensor) -> int:
    n = src.shape[0]
    if tgt.shape[0] != n or labels.shape != (n, n):
        raise ValueError(
            f"expected src [N, d], tgt [N, d] and labels [N, N] with one N; got {list(src.shape)}, "
            f"{list(tgt.shape)} and {list(labels.shape)}"
        )
    return n


def soft_contrastive_loss(
    src: Tensor,
    tgt: Tensor,
    labels: Tensor,
    *,
    tau: float,
    margin: float = 0.0,
    negatives: Tensor | None = None,
) -> Tensor:
    """``L_cross = L_row + L_col`` (Eq. 2 and 6) with ``sim_f = cos / tau``.

    With hard labels this is the symmetric InfoNCE of LaBSE/mE5:
    ``cross_entropy(S / tau, arange) + cross_entropy(S.T / tau, arange)`` for ``S = cos(src, tgt)``.

    Args:
        src: ``[N, d]`` student embeddings of the source sentences ``s_i``.
        tgt: ``[N, d]`` student embeddings of their translations ``t_i``.
        labels: ``[N, N]`` soft labels ``w(i, j)`` from :func:`soft_labels`.
        tau: the student temperature.
        margin: optional additive margin on each translation pair's cosine (LaBSE); 0 is the paper.
        negatives: optional ``[M, d]`` extra target-language sentences that are no source's translation
            (mined hard negatives, the mUSE baseline): they join every row's softmax with label 0.
    """
    n = _check_pairs(src, tgt, labels)
    row = soft_cross_entropy(*_with_negatives(src, tgt, labels, negatives), tau=tau, margin=margin)
    col = soft_cross_entropy(tgt, src, labels.T, tau=tau, margin=margin)
    return (row + col) / n


def _with_negatives(queries: Tensor, keys: Tensor, targets: Tensor, negatives: Tensor | None):
    """``(queries, keys + negatives, targets + zero columns)``: negatives are candidates no one targets."""
    if negatives is None:
        return queries, keys, targets
    padding = targets.new_zeros(targets.shape[0], negatives.shape[0])
    return queries, torch.cat([keys, negatives]), torch.cat([targets, padding], dim=1)


def monolingual_loss(src: Tensor, tgt: Tensor, labels: Tensor, *, tau: float) -> Tensor:
    """``L_mono`` (Eq. 7): the soft labels on ``sim_f(s, s)`` and ``sim_f(t, t)``, column-normalised.

    ``-1/N sum_ij w(i,j) log softmax_n sim_f(s_n, s_j)|_{n=i}`` plus the same for ``t``. Column ``j`` of a
    symmetric similarity matrix is its row ``j``, so each term is :func:`soft_cross_entropy` with the
    labels transposed.
    """
    n = _check_pairs(src, tgt, labels)
    source_side = soft_cross_entropy(src, src, labels.T, tau=tau)
    target_side = soft_cross_entropy(tgt, tgt, labels.T, tau=tau)
    return (source_side + target_side) / n


def imascl_loss(
    src: Tensor,
    tgt: Tensor,
    labels: Tensor,
    *,
    tau: float,
    lam: float | None = None,
    margin: float = 0.0,
    negatives: Tensor | None = None,
) -> Tensor:
    """The paper's objective: ``L_cross`` when ``lam`` is None, else ``lam * L_cross + L_mono`` (Eq. 8, TMS).

    The authors' code has no lambda; it corresponds to ``lam = 1``. The paper's setting is ``lam = 0.1``.
    ``margin`` and ``negatives`` are as in :func:`soft_contrastive_loss`.
    """
    cross = soft_contrastive_loss(src, tgt, labels, tau=tau, margin=margin, negatives=negatives)
    if lam is None:
        return cross
    return lam * cross + monolingual_loss(src, tgt, labels, tau=tau)


def local_imascl_loss(
    src_local: Tensor,
    tgt_local: Tensor,
    src_all: Tensor,
    tgt_all: Tensor,
    row_labels: Tensor,
    col_labels: Tensor,
    *,
    offset: int,
    tau: float,
    lam: float | None = None,
    margin: float = 0.0,
    negatives_all: Tensor | None = None,
) -> Tensor:
    """One block's share of :func:`imascl_loss`: its own rows and columns against the whole batch.

    The block holds pairs ``offset .. offset + B - 1`` of a batch of ``N``. Its rows of ``L_row`` and its
    columns of ``L_col`` and ``L_mono`` cost ``B x N`` logits instead of ``N x N``; summed over the blocks
    that tile the batch, the shares equal :func:`imascl_loss` exactly (value and gradients).

    Args:
        src_local, tgt_local: ``[B, d]`` the block's student embeddings.
        src_all, tgt_all: ``[N, d]`` the whole batch's (the block's rows included, at ``offset``).
        row_labels: ``[B, N]`` the block's rows of ``w``: ``w[offset:offset+B, :]``.
        col_labels: ``[B, N]`` the block's columns of ``w``, transposed: ``w[:, offset:offset+B].T``.
        offset: the block's first row in the batch.
        tau, lam, margin: as in :func:`imascl_loss`.
        negatives_all: ``[M, d]`` every block's extra negatives, as ``negatives`` of :func:`imascl_loss`.
    """
    n = src_all.shape[0]
    row_terms = _with_negatives(src_local, tgt_all, row_labels, negatives_all)
    cross = soft_cross_entropy(*row_terms, tau=tau, margin=margin, offset=offset)
    cross = cross + soft_cross_entropy(tgt_local, src_all, col_labels, tau=tau, margin=margin, offset=offset)
    if lam is None:
        return cross / n
    mono = soft_cross_entropy(src_local, src_all, col_labels, tau=tau) + soft_cross_entropy(
        tgt_local, tgt_all, col_labels, tau=tau
    )
    return (lam * cross + mono) / n


@_full_precision
def mse_distillation_loss(student_src: Tensor, student_tgt: Tensor, teacher_src: Tensor) -> Tensor:
    """Embedding distillation of Reimers & Gurevych (2020): both student sides regress onto ``g(s_i)``.

    ``mean((f(s_i) - g(s_i))^2) + mean((f(t_i) - g(s_i))^2)``: the student's source and target embeddings
    both match the teacher's embedding of the source sentence, so the student and teacher must share a
    dimension. (The authors' "MMSE" baseline, an MSE between similarity matrices, is a different loss.)
    """
    if student_src.shape != teacher_src.shape or student_tgt.shape != teacher_src.shape:
        raise ValueError(
            "mse distillation needs student and teacher embeddings of one shape; got student "
            f"{list(student_src.shape)} / {list(student_tgt.shape)} and teacher {list(teacher_src.shape)}"
        )
    teacher_src = teacher_src.detach()
    return F.mse_loss(student_src, teacher_src) + F.mse_loss(student_tgt, teacher_src)
