"""Gradient caching (GradCache, Gao et al. 2021) for every loss of the project, soft labels included.

A contrastive loss couples every embedding of the global batch, so the encoder's activations for the
whole batch must normally be alive at once: memory grows with the batch. GradCache cuts the step in
three, so that only one micro-batch's activations ever exist:

1. embed the rank's texts **without gradient**, in length-sorted micro-batches (as
   :mod:`imascl_ray.engine.encode` buckets them), recording the random state before each one;
2. compute the loss on those embeddings (made leaves that require grad; the loss gathers every rank's
   embeddings with gradient, so it is the same distributed loss as ever, any kind, local or full form,
   TMS or not) and backpropagate it to the leaves: their ``.grad`` is ``dL/d(local embeddings)``;
3. re-encode each micro-batch **with gradient**, with the random state of step 1 restored (dropout
   draws the same masks), and backpropagate the cached gradient of its rows into the encoder.

The encoder's gradient is then exactly the uncached step's (same dropout masks: the bucketed step's;
one micro-batch: the plain step's), at the cost of one more forward pass. Under DDP the re-encoding of
every micro-batch but the last runs in ``no_sync()``, so the gradients are all-reduced once per step,
not once per micro-batch (sentence-transformers' cached losses all-reduced every micro-batch until its
issue 4027). The random state is the CPU generator's and, on a CUDA device, that device's.

:class:`CachedEncoding` is the strategy the training loop uses (``embed`` is step 1; the loop's own
``loss.backward()`` is step 2; ``backward()`` is step 3); :func:`grad_cached_backward` does all three
around a loss closure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from imascl_ray.engine.encode import (
    flatten_groups,
    in_batch_order,
    length_buckets,
    split_groups,
    token_counts,
    unwrap,
)


@dataclass
class RandomState:
    """The CPU generator's state and, for a CUDA device, that device's: what dropout draws from."""

    cpu: Tensor
    cuda: Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def _sync_context(model: nn.Module, last: bool) -> AbstractContextManager:
    """DDP's ``no_sync()`` for every micro-batch but the last; nothing outside DDP."""
    no_sync = getattr(model, "no_sync", None)
    return nullcontext() if last or no_sync is None else no_sync()


class CachedEncoding:
    """GradCache as an encoding strategy: ``embed`` without gradient, ``backward`` re-encodes with it.

    Use: ``src, tgt, negatives = cache.embed(src_texts, tgt_texts, negative_texts)``, compute the loss on
    them, ``loss.backward()`` (scaled or not), then ``cache.backward()``. The tensors ``embed`` returns
    are views of one leaf that requires grad; nothing of the encoder's graph is kept between the calls.
    """

    def __init__(
        self,
        model: nn.Module,
        micro_batch_size: int,
        *,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.model, self.micro_batch_size, self.autocast = model, micro_batch_size, autocast
        self._pending: tuple[list[str], list[np.ndarray], list[RandomState], Tensor] | None = None

    def embed(self, *groups: Sequence[str] | None) -> tuple[Tensor | None, ...]:
        """Step 1: every group's embeddings, computed without gradient, as leaves that require grad."""
        encoder = unwrap(self.model)
        texts, sizes = flatten_groups(groups)
        buckets = length_buckets(token_counts(encoder, texts), self.micro_batch_size)
        states, parts = [], []
        with torch.no_grad():
            for bucket in buckets:
                states.append(RandomState.capture(encoder.device))
                parts.append(self.model([texts[i] for i in bucket]))
        if parts:
            embeddings = in_batch_order(parts, buckets)
        else:
            embeddings = torch.zeros(0, encoder.embedding_dim, device=encoder.device)
        embeddings.requires_grad_(True)
        self._pending = (texts, buckets, states, embeddings)
        return split_groups(embeddings, sizes)

    def backward(self) -> None:
        """Step 3: re-encode each micro-batch with gradient and push the cached gradient through it."""
        if self._pending is None:
            raise RuntimeError("CachedEncoding.backward() needs embed() first")
        texts, buckets, states, embeddings = self._pending
        self._pending = None
        if not buckets:
            return
        if embeddings.grad is None:
            raise RuntimeError(
                "the cached embeddings have no gradient: "
                "call loss.backward() before CachedEncoding.backward()"
            )
        gradient = embeddings.grad
        after_first_pass = RandomState.capture(unwrap(self.model).device)
        try:
            for index, (bucket, state) in enumerate(zip(buckets, states, strict=True)):
                rows = torch.from_numpy(bucket).to(gradient.device)
                with _sync_context(self.model, last=index == len(buckets) - 1):
                    state.restore()
                    with self.autocast():
                        part = self.model([texts[i] for i in bucket])
                    part.backward(gradient[rows].to(part.dtype))
        finally:
            after_first_pass.restore()  # the generator ends where the uncached step leaves it


def grad_cached_backward(
    model: nn.Module,
    groups: Sequence[Sequence[str] | None],
    loss_of_embeddings: Callable[..., Tensor],
    *,
    micro_batch_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> Tensor:
    """One GradCache forward-backward; returns the loss (detached). The encoder's ``.grad`` is filled.

    Args:
        model: the encoder, or DDP around it (gradients are synchronised once, on the last micro-batch).
        groups: the rank's texts, e.g. ``(src_texts, tgt_texts, negative_texts or None)``.
        loss_of_embeddings: the loss of this rank's embeddings, one argument per group (None for an
            absent group); it gathers across ranks itself (e.g. with
            :func:`imascl_ray.distributed.distributed_loss`).
        micro_batch_size: texts per micro-batch (all groups bucketed together by length).
        autocast: the mixed-precision context of the forward passes.
        backward: how the loss is backpropagated to the embeddings (e.g. through a grad scaler:
            ``lambda loss: scaler.scale(loss).backward()``).
    """
    cache = CachedEncoding(model, micro_batch_size, autocast=autocast)
    with autocast():
        embeddings = cache.embed(*groups)
        loss = loss_of_embeddings(*embeddings)
    backward(loss)
    cache.backward()
    return loss.detach()
