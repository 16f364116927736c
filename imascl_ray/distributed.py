"""Negatives across workers: gather embeddings with gradient into the inputs every loss takes.

With ``W`` data-parallel ranks each holding ``B`` pairs of a global batch of ``N = W * B``, every rank
gathers the batch's student embeddings (:func:`gather_with_grad`) so each sentence is contrasted with all
``N - 1`` others, not only its ``B - 1`` neighbours: :func:`gather_inputs` turns a rank's embeddings into
the :class:`~imascl_ray.losses.LossInputs` that every loss of :mod:`imascl_ray.losses` is called on. A
contrastive loss then computes in one of two forms, same value and gradients:

* ``full``: every rank computes the whole ``N x N`` loss (simple; ``O(N^2)`` memory per rank);
* ``local``: every rank computes only its own rows and columns, ``B x N`` logits (``O(N^2 / W)``),
  as open_clip's ``local_loss`` does; the shares add up to the global loss.

Convention, for every loss and form: the value returned on each rank, *averaged over ranks*
(:func:`mean_over_ranks`), is the global loss, and ``backward()`` followed by DDP's gradient *averaging*
gives the single-process gradient. (For the full form the returned value is the global loss itself; for
the local form it is ``W`` times the rank's share.) Only public ``torch.distributed`` APIs are used; ranks
are global ranks, so it is correct on many nodes. Not distributed (or a world of one), everything reduces
to the single-process loss.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from imascl_ray.losses import LossInputs

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


def gather_inputs(
    src: Tensor,
    tgt: Tensor,
    teacher_anchor: Tensor | None = None,
    teacher_other: Tensor | None = None,
    negatives: Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> LossInputs:
    """This rank's :class:`~imascl_ray.losses.LossInputs`: its embeddings and every rank's, gathered.

    Args:
        src, tgt: ``[B, d]`` this rank's student embeddings (its slice of the global batch).
        teacher_anchor, teacher_other: ``[N, d_g]`` teacher embeddings of the anchor and the other side of
            *every* pair of the global batch (the training loop looks them up in its cache), or None for a
            loss that needs none. They are not gathered.
        negatives: ``[M, d]`` this rank's embeddings of mined hard negatives, gathered like the batch.
        group: the process group (default: the world).
    """
    world, rank = world_size_and_rank(group)
    src_all = gather_with_grad(src, group)
    tgt_all = gather_with_grad(tgt, group, check_shapes=False)
    negatives_all = gather_with_grad(negatives, group) if negatives is not None else None
    return LossInputs(
        src=src,
        tgt=tgt,
        src_all=src_all,
        tgt_all=tgt_all,
        teacher_anchor=teacher_anchor,
        teacher_other=teacher_other,
        negatives_all=negatives_all,
        offset=rank * src.shape[0],
        world_size=world,
        gather=functools.partial(gather_with_grad, group=group, check_shapes=False),
    )


def mean_over_ranks(values: Mapping[str, Tensor], group: dist.ProcessGroup | None = None) -> dict[str, float]:
    """Each scalar averaged over the ranks, in one all-reduce: the global value of every loss term."""
    names = list(values)
    if not names:
        return {}
    stacked = torch.stack([values[name].detach().to(torch.float64).reshape(()) for name in names])
    if is_distributed(group):
        dist.all_reduce(stacked, group=group)
        stacked /= dist.get_world_size(group)
    return dict(zip(names, stacked.tolist(), strict=True))


class ShardedEncoder:
    """An evaluation encoder whose ``encode`` splits the texts over the ranks and gathers the embeddings.

    ``encoder`` is anything with ``encode(texts) -> [n, d]`` (a :class:`~imascl_ray.encoder.SentenceEncoder`).
    Every rank calls ``encode`` with the same texts; rank ``r`` encodes ``texts[r::W]`` (a strided share,
    so every rank gets sentences of every length) with ``encoder.encode``, the shares are all-gathered
    (padded to one size) and each rank returns all ``len(texts)`` embeddings in input order, float32 on
    the CPU, as ``encoder.encode`` would. Each rank encodes ``1/W`` of the sentences, where rank 0 alone
    would encode all of them while the others wait at the next collective (not benchmarked).
    ``device`` is where the gathered tensors travel (the rank's CUDA device under NCCL).
    """

    def __init__(
        self, encoder: Any, *, device: torch.device | str = "cpu", group: dist.ProcessGroup | None = None
    ) -> None:
        self.encoder, self.device, self.group = encoder, torch.device(device), group

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Tensor:
        """Embeddings ``[len(texts), d]`` of every text, in input order, on every rank."""
        world, rank = world_size_and_rank(self.group)
        if world == 1:
            return torch.as_tensor(self.encoder.encode(texts, **kwargs)).float()
        texts = list(texts)
        share = texts[rank::world]
        per_rank = -(-len(texts) // world)
        local = torch.as_tensor(self.encoder.encode(share, **kwargs)).float() if share else None
        if len(texts) >= world:  # every rank has a share (the ranks agree: they hold the same texts)
            dim = local.shape[1]
        else:  # a rank with no share learns d from the others
            found = torch.tensor([0 if local is None else local.shape[1]], device=self.device)
            dist.all_reduce(found, op=dist.ReduceOp.MAX, group=self.group)
            dim = int(found)
        padded = torch.zeros(per_rank, dim, device=self.device)
        if local is not None:
            padded[: local.shape[0]] = local.to(self.device)
        shares = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(shares, padded, group=self.group)
        # text i sits on rank i % W at row i // W: interleave the shares back into input order
        return torch.stack(shares, dim=1).reshape(per_rank * world, -1)[: len(texts)].cpu()
