"""Unpadded encoding: the transformer's dense layers see only real tokens, as in MosaicBERT.

A padded batch ``[n, L]`` of sentences of different lengths spends most of a BERT layer's compute on
padding: the query/key/value projections, the attention output projection, the MLP and the layer norms
run on every position, padding included, and at these lengths they are nearly all of the FLOPs. Here the
embeddings run on the padded batch as the model runs them (its own position ids, token types, layer
norm), the real tokens are then taken out into one ``[T, d]`` tensor (``T`` = the batch's real tokens),
and every layer runs its dense parts on that tensor. Only attention needs the sequences apart: the
projected queries, keys and values are put back into a padded ``[n, heads, L, d_head]`` view for
``scaled_dot_product_attention`` with a key-padding mask (on CPU, the cheap part at these lengths:
attention is ``L / 6d`` of a layer's FLOPs, about 2 % for 60 tokens at d = 384) and its output is
unpadded again. Pooling reads the ``[T, d]`` states directly (a segment mean, or each sequence's first
token). Length bucketing (:mod:`imascl_ray.engine.encode`) still trims what attention pads.

The result equals the padded model's up to float rounding (fp32: ~1e-6), gradients included: padding
never reaches a real token in the padded model either (it is masked out of attention and of the
pooling). Dropout draws different masks (the tensors have other shapes), with the same distribution.

It works on the BERT family's layer layout (``BertModel``, ``XLMRobertaModel``, ``RobertaModel``,
``CamembertModel``: absolute positions, encoder only); :func:`unsupported_reason` says why another model
is not, and :class:`~imascl_ray.encoder.SentenceEncoder` then runs it padded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED_MODEL_TYPES = ("bert", "xlm-roberta", "roberta", "camembert")
"""``config.model_type`` of the models whose layers :func:`unpadded_hidden` knows how to run."""


@dataclass(frozen=True)
class Unpadding:
    """Where the real tokens of a padded ``[n, L]`` batch are, and which sequence each belongs to."""

    indices: Tensor
    """``[T]``: flat positions (in ``n * L``) of the real tokens, sequence by sequence."""
    sequence: Tensor
    """``[T]``: the sequence (row) of each real token."""
    lengths: Tensor
    """``[n]``: real tokens per sequence."""
    first: Tensor
    """``[n]``: where each sequence's first real token sits in the ``[T]`` tensor."""
    key_mask: Tensor
    """``[n, 1, 1, L]`` bool: True where a key is a real token (what attention may look at)."""
    batch: int
    length: int

    @classmethod
    def from_mask(cls, attention_mask: Tensor) -> Unpadding:
        """From a ``[n, L]`` attention mask (1 = real token, 0 = padding, on either side)."""
        mask = attention_mask.bool()
        batch, length = mask.shape
        flat = mask.reshape(-1)
        indices = flat.nonzero(as_tuple=True)[0]
        lengths = mask.sum(dim=1)
        first = torch.cumsum(lengths, dim=0) - lengths
        return cls(
            indices=indices,
            sequence=indices // length,
            lengths=lengths,
            first=first,
            key_mask=mask[:, None, None, :],
            batch=batch,
            length=length,
        )

    @property
    def tokens(self) -> int:
        """``T``: the real tokens of the batch."""
        return int(self.indices.numel())

    def unpad(self, padded: Tensor) -> Tensor:
        """``[n, L, ...]`` -> ``[T, ...]``: the real positions only (with gradient)."""
        return padded.reshape(self.batch * self.length, *padded.shape[2:]).index_select(0, self.indices)

    def pad(self, tokens: Tensor) -> Tensor:
        """``[T, ...]`` -> ``[n, L, ...]``: zeros at the padding (with gradient to the real positions)."""
        zeros = tokens.new_zeros(self.batch * self.length, *tokens.shape[1:])
        return zeros.index_copy(0, self.indices, tokens).reshape(self.batch, self.length, *tokens.shape[1:])


def unsupported_reason(model: nn.Module) -> str | None:
    """Why :func:`unpadded_hidden` cannot run ``model`` (None: it can).

    It needs an encoder-only model of the BERT family with absolute position embeddings and the usual
    layer layout (``attention.self.{query,key,value}``, ``attention.output``, ``intermediate``, ``output``).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder (causal or cross attention) is not a sentence encoder"
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position_embedding_type {config.position_embedding_type!r} (relative) is not supported"
    embeddings, encoder = getattr(model, "embeddings", None), getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if embeddings is None or layers is None:
        return "the model has no embeddings / encoder.layer modules"
    for index, layer in enumerate(layers):
        self_attention = getattr(getattr(layer, "attention", None), "self", None)
        needed = [getattr(self_attention, name, None) for name in ("query", "key", "value")]
        needed += [getattr(getattr(layer, "attention", None), "output", None)]
        needed += [getattr(layer, "intermediate", None), getattr(layer, "output", None)]
        if any(module is None for module in needed):
            return f"layer {index} does not have the BERT layer layout"
    return None


def _attention(layer: nn.Module, hidden: Tensor, unpadding: Unpadding) -> Tensor:
    """One layer's self-attention block on ``[T, d]``: dense projections unpadded, attention padded."""
    block = layer.attention.self
    heads, head_size = block.num_attention_heads, block.attention_head_size
    n, length = unpadding.batch, unpadding.length

    def heads_view(projection: nn.Module) -> Tensor:  # [T, d] -> [n, heads, L, d_head]
        return unpadding.pad(projection(hidden)).view(n, length, heads, head_size).transpose(1, 2)

    query, key, value = heads_view(block.query), heads_view(block.key), heads_view(block.value)
    dropout = block.dropout.p if block.training else 0.0
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=unpadding.key_mask, dropout_p=dropout, scale=block.scaling
    )
    context = unpadding.unpad(context.transpose(1, 2).reshape(n, length, heads * head_size))
    return layer.attention.output(context, hidden)


def unpadded_hidden(model: nn.Module, features: dict[str, Tensor]) -> tuple[Tensor, Unpadding]:
    """The last hidden states of the real tokens only, ``[T, d]``, and where they came from.

    ``features``: the tokenizer's ``input_ids``, ``attention_mask`` (and ``token_type_ids``), padded.
    The embeddings run as the model runs them; then every layer as :mod:`this module <imascl_ray.unpad>`
    says. Call :func:`unsupported_reason` first.
    """
    unpadding = Unpadding.from_mask(features["attention_mask"])
    token_types = features.get("token_type_ids")
    embedded = model.embeddings(input_ids=features["input_ids"], token_type_ids=token_types)
    hidden = unpadding.unpad(embedded)
    for layer in model.encoder.layer:
        attended = _attention(layer, hidden, unpadding)
        hidden = layer.output(layer.intermediate(attended), attended)
    return hidden, unpadding


def pool_unpadded(hidden: Tensor, unpadding: Unpadding, pooling: str) -> Tensor:
    """Sentence vectors ``[n, d]`` from real-token states ``[T, d]``: as :func:`imascl_ray.encoder.pool`."""
    if pooling == "cls":
        return hidden.index_select(0, unpadding.first)
    if pooling == "mean":
        sums = hidden.new_zeros(unpadding.batch, hidden.shape[-1]).index_add(0, unpadding.sequence, hidden)
        return sums / unpadding.lengths.clamp(min=1).unsqueeze(-1).to(hidden.dtype)
    raise ValueError(f"unknown pooling {pooling!r}")


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class DenseTokenCount:
    """Rows through the encoder layers' linear layers, against the real tokens among them."""

    rows: int = 0
    """Token rows that went through the dense layers (one per row per linear layer call)."""
    real: int = 0
    """Real tokens those calls were for (the same count with padding left out)."""
    calls: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """Real tokens over token rows: 1.0 when no padding reaches a dense layer."""
        return self.real / self.rows if self.rows else float("nan")


@contextmanager
def count_dense_tokens(model: nn.Module) -> Iterator[DenseTokenCount]:
    """Count what the ``nn.Linear`` layers inside ``model.encoder`` process while the block runs.

    A forward hook on the embeddings module reads each call's real tokens from the ``input_ids``
    (``config.pad_token_id`` is padding) and how many linear layers the encoder has; each linear
    layer's hook adds the rows of its input. The fraction is real tokens over rows: what share of the
    dense compute went to real tokens.
    """
    count = DenseTokenCount()
    linears = [module for module in model.encoder.modules() if isinstance(module, nn.Linear)]
    pad_id = model.config.pad_token_id

    def on_embeddings(module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is not None:
            count.real += int((input_ids != pad_id).sum()) * len(linears)

    def on_linear(module: nn.Module, args: tuple) -> None:
        count.rows += args[0].numel() // args[0].shape[-1]

    handles = [model.embeddings.register_forward_pre_hook(on_embeddings, with_kwargs=True)]
    handles += [linear.register_forward_pre_hook(on_linear) for linear in linears]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()
