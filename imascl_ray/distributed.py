"""Negatives across workers: gather embeddings with gradient, and the loss in its full and local forms.

With ``W`` data-parallel ranks each holding ``B`` pairs of a global batch of ``N = W * B``, every rank
gathers the batch's student embeddings (:func:`gather_with_grad`) so each sentence is contrasted with all
``N - 1`` others, not only its ``B - 1`` neighbours. Two forms of the loss, same value and gradients:

* ``full``: every rank computes the whole ``N x N`` loss (simple; ``O(N^2)`` memory per rank);
* ``local``: every rank computes only its own rows and columns, ``B x N`` logits (``O(N^2 / W)``),
  as open_clip's ``local_loss`` does; the shares add up to the global loss.

Convention, for both forms: the value returned on each rank, *averaged over ranks*, is the global loss,
and ``backward()`` followed by DDP's gradient *averaging* gives the single-process gradient of that loss.
(For the full form the returned value is the global loss itself; for the local form it is ``W`` times the
rank's share.) Only public ``torch.distributed`` APIs are used; ranks are global ranks, so it is correct
on many nodes. Not distributed (or a world of one), everything reduces to the single-process loss.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor

from imascl_ray.losses import (
    LabelKind,
    imascl_loss,
    label_logits,
    local_imascl_loss,
    mse_distillation_loss,
    soft_labels,
)

_MAX_DIMS = 8


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size_and_rank(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(world size, this process's global rank)``; ``(1, 0)`` when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def check_same_shape(x: Tensor, group: dist.ProcessGroup | None = None) -> None:
    """Raise ``ValueError`` on every rank unless all ranks hold a tensor of one shape.

    A collective over tensors of different sizes hangs or corrupts memory; exchanging the shapes first
    (a fixed-size message) lets every rank see the mismatch and fail at once with the same message.
    """
    if x.dim() > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {x.dim()}")
    world, _ = world_size_and_rank(group)
    shape = torch.full((_MAX_DIMS + 1,), -1, dtype=torch.int64, device=x.device)
    shape[0] = x.dim()
    shape[1 : x.dim() + 1] = torch.tensor(x.shape, dtype=torch.int64)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    seen = [tuple(s[1 : int(s[0]) + 1].tolist()) for s in shapes]
    if len(set(seen)) > 1:
        listed = ", ".join(f"rank {r}: {list(s)}" for r, s in enumerate(seen))
        raise ValueError(
            f"every rank must hold a batch of the same shape to gather it ({listed}); "
            "cut global batches into equal per-rank slices"
        )


class _GatherWithGrad(torch.autograd.Function):
    """All-gather forward; backward reduce-scatters, so each rank gets the sum of every rank's gradient
    for its own slice (moving ``1/W`` of the data an all-reduce would)."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        world, _ = world_size_and_rank(group)
        ctx.group = group
        x = x.contiguous()
        gathered = x.new_empty((world * x.shape[0], *x.shape[1:]))
        dist.all_gather_single(gathered, x, group=group)
        return gathered

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        world, _ = world_size_and_rank(ctx.group)
        own = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
        dist.reduce_scatter_single(own, grad.contiguous(), op=dist.ReduceOp.SUM, group=ctx.group)
        return own, None


def gather_with_grad(
    x: Tensor, group: dist.ProcessGroup | None = None, *, check_shapes: bool = True
) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, in global-rank order, keeping the autograd graph.

    The gradient that reaches rank ``r``'s ``x`` is the sum, over all ranks, of the gradient with respect
    to slice ``r`` of the gathered tensor. Identity when not distributed.

    Args:
        x: ``[B, ...]`` this rank's tensor; every rank must hold the same shape.
        group: the process group (default: the world).
        check_shapes: exchange shapes first so unequal batches raise ``ValueError`` instead of hanging.
    """
    if not is_distributed(group):
        return x
    if check_shapes:
        check_same_shape(x, group)
    return _GatherWithGrad.apply(x, group)


def _row_logsumexp(logits_rows: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Gather every rank's row log-sum-exp of the label logits: ``[N]``, enough to normalise any column."""
    return gather_with_grad(torch.logsumexp(logits_rows, dim=1), group, check_shapes=False)


def _local_label_blocks(
    anchor_all: Tensor,
    other_all: Tensor | None,
    *,
    kind: LabelKind,
    tau: float,
    offset: int,
    rows: int,
    group: dist.ProcessGroup | None,
) -> tuple[Tensor, Tensor]:
    """This rank's rows ``w[R, :]`` and transposed columns ``w[:, R].T`` of the soft labels, ``[B, N]`` each.

    A column of ``w`` mixes every row's softmax normaliser; each rank computes the log-sum-exp of its own
    rows and the ranks exchange those ``N`` numbers, so no rank ever builds the ``N x N`` label matrix.
    """
    n = anchor_all.shape[0]
    block = slice(offset, offset + rows)
    if kind == "hard":
        eye = torch.zeros(rows, n, dtype=anchor_all.dtype, device=anchor_all.device)
        eye[torch.arange(rows), torch.arange(offset, offset + rows)] = 1.0
        return eye, eye
    other_rows = other_all[block] if other_all is not None else None
    logits_rows = label_logits(anchor_all[block], anchor_all, other_rows, other_all, kind=kind, tau=tau)
    row_labels = logits_rows.softmax(dim=1)
    logsumexp_all = _row_logsumexp(logits_rows, group)
    # Column j of w is exp(logits[:, j] - lse); label logits are symmetric, so logits[:, R].T = logits[R].
    col_labels = torch.exp(logits_rows - logsumexp_all[None, :])
    return row_labels, col_labels


def distributed_loss(
    src: Tensor,
    tgt: Tensor,
    teacher_anchor: Tensor | None = None,
    teacher_other: Tensor | None = None,
    *,
    kind: LabelKind | Literal["mse"],
    tau: float,
    teacher_tau: float | None = None,
    lam: float | None = None,
    margin: float = 0.0,
    local: bool = False,
    teacher_scope: Literal["local", "global"] = "local",
    negatives: Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> Tensor:
    """The training loss of one data-parallel rank, with negatives gathered from every rank.

    Args:
        src, tgt: ``[B, d]`` this rank's student embeddings (its slice of the global batch).
        teacher_anchor, teacher_other: teacher embeddings of the anchor and the other side, either this
            rank's slice (``teacher_scope="local"``, gathered here) or the whole global batch
            (``"global"``, e.g. looked up from a teacher cache by every rank); ``teacher_anchor`` is not
            needed for hard labels, ``teacher_other`` only for ``average``.
        kind: ``hard``, ``priority``, ``average`` (:func:`imascl_ray.losses.soft_labels`) or ``mse``
            (:func:`imascl_ray.losses.mse_distillation_loss`, which needs no negatives: it is averaged
            over the local batch and DDP's averaging makes it the global mean).
        tau: the student temperature; ``teacher_tau`` the labels' (default: ``tau``, as in the paper).
        lam: None for ``L_cross``, else ``lam * L_cross + L_mono``.
        margin: additive margin on the translation pair's cosine.
        local: compute only this rank's rows and columns (``B x N`` logits) instead of ``N x N``.
        negatives: ``[M, d]`` this rank's extra negatives (embeddings of mined hard negatives, the mUSE
            baseline); gathered like the batch, they join every row's softmax with label 0.
        group: the process group (default: the world).
    Returns:
        A scalar following the module's convention: averaged over ranks it is the global loss, and
        backward + DDP averaging gives the single-process gradient.
    """
    if kind == "mse":
        if teacher_anchor is None:
            raise ValueError("the mse loss needs the teacher embeddings of the source side")
        return mse_distillation_loss(src, tgt, teacher_anchor)
    teacher_tau = tau if teacher_tau is None else teacher_tau
    world, rank = world_size_and_rank(group)
    rows = src.shape[0]
    src_all, tgt_all = gather_with_grad(src, group), gather_with_grad(tgt, group, check_shapes=False)

    def gathered(teacher: Tensor | None) -> Tensor | None:
        if teacher is None or teacher_scope == "global":
            return teacher
        return gather_with_grad(teacher.detach(), group)

    if kind != "hard" and teacher_anchor is None:
        raise ValueError(f"{kind} labels need the teacher embeddings of the anchor side")
    # Hard labels need no teacher: the detached batch only tells the label builders N, dtype and device.
    anchor_all = gathered(teacher_anchor) if kind != "hard" else src_all.detach()
    other_all = gathered(teacher_other) if kind == "average" else None
    if anchor_all.shape[0] != src_all.shape[0]:
        raise ValueError(
            f"teacher embeddings cover {anchor_all.shape[0]} pairs but the gathered batch has "
            f"{src_all.shape[0]}; teacher_scope={teacher_scope!r}"
        )
    negatives_all = gather_with_grad(negatives, group) if negatives is not None else None
    if not local:
        labels = soft_labels(anchor_all, other_all, kind=kind, tau=teacher_tau)
        return imascl_loss(src_all, tgt_all, labels, tau=tau, lam=lam, margin=margin, negatives=negatives_all)
    offset = rank * rows
    row_labels, col_labels = _local_label_blocks(
        anchor_all, other_all, kind=kind, tau=teacher_tau, offset=offset, rows=rows, group=group
    )
    share = local_imascl_loss(
        src,
        tgt,
        src_all,
        tgt_all,
        row_labels,
        col_labels,
        offset=offset,
        tau=tau,
        lam=lam,
        margin=margin,
        negatives_all=negatives_all,
    )
    return share * world
