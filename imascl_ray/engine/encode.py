"""How a rank turns its texts into student embeddings: plainly, in length buckets, or with a gradient cache.

A rank's slice of the global batch holds sentences of very different lengths. Encoded as one padded
batch, most of its token positions are padding (about half at 32 pairs, two thirds at 256 on the
quickstart's localisation pairs): the encoder spends that compute on nothing. *Length bucketing* sorts
the rank's texts (sources, targets and mined negatives together) by token count, encodes them in
micro-batches of ``micro_batch_size`` similar-length texts, each padded only to its own longest, and puts
the embeddings back in batch order. The loss is unchanged: the negatives are still the whole random
global batch, gathered afterwards; only the padding goes. With dropout off the embeddings, the loss and
the gradients equal the unbucketed step's up to float rounding (padding is masked out of attention and
of mean pooling).

Inside each forward the student runs unpadded by default (``model.unpad``, :mod:`imascl_ray.unpad`): its
dense layers see only the real tokens whatever the strategy, so what bucketing still saves is the padding
attention needs (each micro-batch's queries, keys and values are padded to its own longest text) and the
memory of one micro-batch at a time; at 32 pairs plain and bucketed unpadded steps cost about the same.

Three strategies share one small interface (:class:`Encoding`): ``embed(*groups)`` returns one
embedding tensor per group of texts (``None`` stays ``None``), and ``backward()`` runs after the loss's
own backward (a no-op except for the gradient cache, :class:`imascl_ray.engine.grad_cache.CachedEncoding`,
which re-encodes with gradient there). :func:`make_encoding` picks one from ``scaling.encoding``.

Every rank encodes the same number of micro-batches (its slice and its negatives have the same size on
every rank), so DDP's per-forward collectives (buffer broadcasts) stay in step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from imascl_ray.encoder import SentenceEncoder

EncodingName = Literal["plain", "bucketed", "cached"]
ENCODINGS: tuple[str, ...] = ("plain", "bucketed", "cached")
Groups = Sequence[Sequence[str] | None]


class Encoding(Protocol):
    """Texts to embeddings for one step; see the module docstring."""

    def embed(self, *groups: Sequence[str] | None) -> tuple[Tensor | None, ...]: ...

    def backward(self) -> None: ...


def unwrap(model: nn.Module) -> SentenceEncoder:
    """The :class:`SentenceEncoder` inside a DDP wrapper (or the encoder itself)."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, SentenceEncoder):
        raise TypeError(f"expected a SentenceEncoder (or DDP around one), got {type(inner).__name__}")
    return inner


def token_counts(encoder: SentenceEncoder, texts: Sequence[str]) -> np.ndarray:
    """Tokens of ``prefix + text`` for each text after truncation to ``max_length`` (special tokens in)."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = encoder.tokenizer(
        [encoder.prefix + text for text in texts], truncation=True, max_length=encoder.max_length
    )["input_ids"]
    return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))


def length_buckets(lengths: np.ndarray, micro_batch_size: int) -> list[np.ndarray]:
    """Indices of ``lengths`` cut into micro-batches of ``micro_batch_size`` texts, longest first.

    A stable sort by decreasing length, so equal lengths keep their batch order and the plan depends only
    on the lengths. The longest micro-batch comes first: a run that would run out of memory does so on
    its first micro-batch, not its last.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be at least 1, got {micro_batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[start : start + micro_batch_size] for start in range(0, len(order), micro_batch_size)]


def in_batch_order(parts: Sequence[Tensor], buckets: Sequence[np.ndarray]) -> Tensor:
    """The micro-batches' embeddings put back in batch order (with gradient, through one index)."""
    embeddings = torch.cat(list(parts))
    order = torch.from_numpy(np.concatenate(buckets)).to(embeddings.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return embeddings[inverse]


def flatten_groups(groups: Groups) -> tuple[list[str], list[int | None]]:
    """All texts of the groups in one list, and each group's size (None for an absent group)."""
    texts: list[str] = []
    sizes: list[int | None] = []
    for group in groups:
        if group is None:
            sizes.append(None)
            continue
        if isinstance(group, str):
            raise TypeError("each group must be a sequence of texts, not one string")
        texts.extend(group)
        sizes.append(len(group))
    return texts, sizes


def split_groups(embeddings: Tensor, sizes: Sequence[int | None]) -> tuple[Tensor | None, ...]:
    """Undo :func:`flatten_groups` on the embeddings: one tensor per group, None where a group was."""
    present = embeddings.split([size for size in sizes if size is not None])
    pieces = iter(present)
    return tuple(None if size is None else next(pieces) for size in sizes)


def encode_bucketed(
    model: nn.Module, texts: Sequence[str], micro_batch_size: int
) -> tuple[Tensor, list[np.ndarray]]:
    """Embeddings ``[n, d]`` of ``texts`` in their order, computed in length-sorted micro-batches.

    ``model`` is the encoder or DDP around it (its forward runs once per micro-batch, with gradient when
    grad mode is on). Returns the embeddings and the micro-batches' indices (the plan).
    """
    encoder = unwrap(model)
    buckets = length_buckets(token_counts(encoder, texts), micro_batch_size)
    if not buckets:
        return torch.zeros(0, encoder.embedding_dim, device=encoder.device), buckets
    parts = [model([texts[i] for i in bucket]) for bucket in buckets]
    return in_batch_order(parts, buckets), buckets


class PlainEncoding:
    """One padded forward per group, as a plain step does (the reference the others are tested against)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def embed(self, *groups: Sequence[str] | None) -> tuple[Tensor | None, ...]:
        return tuple(None if group is None else self.model(group) for group in groups)

    def backward(self) -> None:
        """Nothing to do: the loss's backward reached the encoder already."""


class BucketedEncoding:
    """All groups' texts in length-sorted micro-batches of ``micro_batch_size``, with gradient."""

    def __init__(self, model: nn.Module, micro_batch_size: int) -> None:
        self.model, self.micro_batch_size = model, micro_batch_size

    def embed(self, *groups: Sequence[str] | None) -> tuple[Tensor | None, ...]:
        texts, sizes = flatten_groups(groups)
        embeddings, _ = encode_bucketed(self.model, texts, self.micro_batch_size)
        return split_groups(embeddings, sizes)

    def backward(self) -> None:
        """Nothing to do: the loss's backward reached the encoder already."""


def make_encoding(
    name: EncodingName,
    model: nn.Module,
    *,
    micro_batch_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Encoding:
    """The encoding strategy ``scaling.encoding`` names, around ``model`` (the encoder or DDP around it).

    ``autocast`` opens the step's mixed-precision context; the gradient cache re-enters it for its second
    forward pass, which runs after the loss (outside the caller's context).
    """
    if name == "plain":
        return PlainEncoding(model)
    if name == "bucketed":
        return BucketedEncoding(model, micro_batch_size)
    if name == "cached":
        from imascl_ray.engine.grad_cache import CachedEncoding

        return CachedEncoding(model, micro_batch_size, autocast=autocast)
    raise ValueError(f"unknown encoding {name!r}; expected one of {', '.join(ENCODINGS)}")
