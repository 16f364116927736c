"""Vocabulary trimming: keep only the word embeddings a corpus uses, for fast CPU training.

A multilingual model spends most of its parameters on the word-embedding table (multilingual-e5-small:
96M of 118M in 250k x 384). A corpus uses a small part of it. :func:`trim_vocabulary` keeps the
special tokens and the pieces that the corpus's texts tokenise into, rewrites the tokenizer so that
piece ``k`` of the new vocabulary is row ``k`` of the new table, and checks that every corpus text
gets the same pieces as before. The trimmed model then gives the same embeddings on those texts.

Why the tokenisation is unchanged on the corpus:

* Unigram (XLM-R, e5): the tokenizer picks the highest-scoring segmentation (Viterbi). The full
  vocabulary's best segmentation only uses kept pieces, and every segmentation possible with the
  trimmed vocabulary was possible before, so the best one stays the best. The unknown-piece score is
  ``min(score) - 10`` over the vocabulary, so the lowest-scoring piece is kept too, keeping it equal.
* WordPiece (BERT): greedy longest match. The piece it picked is kept and any longer match was absent
  already, so each step repeats. (Words that became ``[UNK]`` are the exception in principle; the
  check below catches any difference.)

Text outside the corpus may tokenise differently (or into ``<unk>``): trim for a fixed corpus only.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imascl_ray.encoder import SentenceEncoder
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class TrimResult:
    """What a trim did: ``kept_ids[k]`` is the old id of new id ``k``."""

    kept_ids: np.ndarray
    old_vocab_size: int

    @property
    def new_vocab_size(self) -> int:
        return len(self.kept_ids)

    @property
    def old_to_new(self) -> dict[int, int]:
        return {int(old): new for new, old in enumerate(self.kept_ids)}


def plain_backend(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's backend without the padding/truncation state that calls leave on it."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def used_token_ids(encoder: SentenceEncoder, texts: Iterable[str], *, batch_size: int = 4096) -> set[int]:
    """The token ids of ``prefix + text`` over all texts (untruncated), special tokens included."""
    backend = plain_backend(encoder.tokenizer)
    used: set[int] = set()
    batch: list[str] = []
    for text in texts:
        batch.append(encoder.prefix + text)
        if len(batch) >= batch_size:
            used.update(i for encoding in backend.encode_batch(batch) for i in encoding.ids)
            batch = []
    if batch:
        used.update(i for encoding in backend.encode_batch(batch) for i in encoding.ids)
    return used


def _remap_ids(node: Any, old_to_new: dict[int, int]) -> Any:
    """Rewrite the token ids that post-processors hold (Template, Bert, Roberta, Sequence)."""
    if isinstance(node, list):
        return [_remap_ids(item, old_to_new) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    kind = node.get("type")
    if kind == "TemplateProcessing":
        node["special_tokens"] = {
            name: {**token, "ids": [old_to_new[i] for i in token["ids"]]}
            for name, token in node["special_tokens"].items()
        }
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = node[key]
            node[key] = [token, old_to_new[old]]
    elif kind == "Sequence" and "processors" in node:
        node["processors"] = [_remap_ids(item, old_to_new) for item in node["processors"]]
    return node


def trimmed_tokenizer_definition(definition: dict[str, Any], kept: np.ndarray) -> dict[str, Any]:
    """A ``tokenizer.json`` dict whose vocabulary is ``kept`` (old ids, ascending), renumbered from 0."""
    old_to_new = {int(old): new for new, old in enumerate(kept)}
    model = dict(definition["model"])
    kind = model.get("type")
    if kind == "Unigram":
        vocab = model["vocab"]
        model["vocab"] = [vocab[int(old)] for old in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = old_to_new[model["unk_id"]]
    elif kind in ("WordPiece", "WordLevel"):
        pieces = {index: piece for piece, index in model["vocab"].items()}
        model["vocab"] = {pieces[int(old)]: new for new, old in enumerate(kept)}
    else:
        raise InputError(
            f"vocabulary trimming supports Unigram, WordPiece and WordLevel tokenizers, not {kind}"
        )
    trimmed = dict(definition)
    trimmed["model"] = model
    trimmed["truncation"] = None
    trimmed["padding"] = None
    trimmed["added_tokens"] = [
        {**token, "id": old_to_new[token["id"]]} for token in definition["added_tokens"]
    ]
    if definition.get("post_processor") is not None:
        trimmed["post_processor"] = _remap_ids(definition["post_processor"], old_to_new)
    return trimmed


def _min_score_id(definition: dict[str, Any]) -> list[int]:
    """For Unigram: the lowest-scoring piece, which fixes the unknown-piece score (``min - 10``)."""
    if definition["model"].get("type") != "Unigram":
        return []
    scores = np.array([score for _piece, score in definition["model"]["vocab"]], dtype=np.float64)
    return [int(scores.argmin())]


def trim_vocabulary(encoder: SentenceEncoder, texts: Sequence[str], *, verify: bool = True) -> TrimResult:
    """Shrink ``encoder``'s vocabulary and word embeddings to what ``texts`` use (in place).

    Keeps the special and added tokens, every piece of ``prefix + text`` for the given texts and (for
    Unigram) the lowest-scoring piece; the embedding table keeps those rows in their old order. With
    ``verify`` (default), re-tokenises the texts and raises ``RuntimeError`` if any gives different
    pieces than before. Returns the old ids of the kept rows.
    """
    from transformers import AutoTokenizer

    tokenizer = encoder.tokenizer
    definition = json.loads(plain_backend(tokenizer).to_str())
    old_table: nn.Embedding = encoder.model.get_input_embeddings()
    old_size = old_table.weight.shape[0]
    special = {int(token["id"]) for token in definition["added_tokens"]}
    used = used_token_ids(encoder, texts)
    kept = np.array(sorted(used | special | set(_min_score_id(definition))), dtype=np.int64)
    if kept.max() >= old_size:
        raise InputError(f"tokenizer id {int(kept.max())} has no row in the {old_size}-row embedding table")
    trimmed = trimmed_tokenizer_definition(definition, kept)

    with tempfile.TemporaryDirectory(prefix="imascl-trim-") as scratch:
        tokenizer.save_pretrained(scratch)
        Path(scratch, "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
        new_tokenizer = AutoTokenizer.from_pretrained(scratch)

    if verify:
        _verify_same_pieces(tokenizer, new_tokenizer, kept, [encoder.prefix + text for text in texts])

    old_to_new = {int(old): new for new, old in enumerate(kept)}
    config = encoder.model.config
    pad = getattr(config, "pad_token_id", None)
    new_pad = old_to_new.get(pad) if pad is not None else None
    weight = old_table.weight.detach()[torch.from_numpy(kept)].clone()
    new_table = nn.Embedding(
        len(kept), weight.shape[1], padding_idx=new_pad, dtype=weight.dtype, device=weight.device
    )
    with torch.no_grad():
        new_table.weight.copy_(weight)
    new_table.weight.requires_grad_(old_table.weight.requires_grad)
    encoder.model.set_input_embeddings(new_table)
    config.vocab_size = len(kept)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        old = getattr(config, key, None)
        if old is not None:
            setattr(config, key, old_to_new.get(old))
    encoder.tokenizer = new_tokenizer
    logger.info("trimmed the vocabulary from %d to %d pieces", old_size, len(kept))
    return TrimResult(kept_ids=kept, old_vocab_size=old_size)


def _verify_same_pieces(old: Any, new: Any, kept: np.ndarray, texts: Sequence[str]) -> None:
    """Every text must map to the same old ids through the trimmed tokenizer and ``kept``."""
    old_backend, new_backend = plain_backend(old), plain_backend(new)
    for start in range(0, len(texts), 4096):
        batch = list(texts[start : start + 4096])
        for text, before, after in zip(
            batch, old_backend.encode_batch(batch), new_backend.encode_batch(batch), strict=True
        ):
            if before.ids != [int(kept[i]) for i in after.ids]:
                raise RuntimeError(
                    f"trimmed tokenizer splits {text!r} differently: {before.tokens} -> {after.tokens}"
                )
