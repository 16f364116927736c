"""The local suite: bitext numbers on held-out pair files, per language pair; also the training validation.

``groups`` is what ``Corpus.groups()`` returns: ``{"en-fr": (sources, targets), ...}``, aligned by
position. The encoder is anything with ``encode(texts) -> Tensor[n, d]``. The result is the JSON shape
of ``imascl-ray eval MODEL --pairs ...``::

    {"en-fr": {"accuracy": ..., "accuracy_src_to_tgt": ..., "accuracy_tgt_to_src": ...,
               "margin_accuracy": ..., "xsim_error": ..., "n": ...}, ...}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from imascl_ray.eval.bitext import MARGIN_K, bitext_scores

logger = logging.getLogger(__name__)

LOCAL_KEYS = ("accuracy", "accuracy_src_to_tgt", "accuracy_tgt_to_src", "margin_accuracy", "xsim_error", "n")
"""The keys of one language pair's entry, in the order they are printed."""

SHORT_NAMES = {
    "accuracy": "acc",
    "accuracy_src_to_tgt": "acc_src_to_tgt",
    "accuracy_tgt_to_src": "acc_tgt_to_src",
    "margin_accuracy": "margin_acc",
    "xsim_error": "xsim",
}
"""Result key -> the metric name used in MLflow keys such as ``local/en-fr/acc``."""


class TextEncoder(Protocol):
    """What the evaluation needs from a model: unit or non-unit embeddings, input order kept."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


def encode_distinct(encoder: TextEncoder, texts: Sequence[str]) -> torch.Tensor:
    """``encoder.encode(texts)``, but each distinct text is encoded once (pair files repeat sentences)."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        raise ValueError("nothing to encode")
    embeddings = torch.as_tensor(encoder.encode(distinct)).float()
    if embeddings.shape[0] != len(distinct):
        raise ValueError(f"encoder returned {embeddings.shape[0]} embeddings for {len(distinct)} texts")
    if len(distinct) == len(texts):
        return embeddings
    row = {text: index for index, text in enumerate(distinct)}
    return embeddings[torch.as_tensor([row[text] for text in texts])]


class EncodeOnce:
    """A :class:`TextEncoder` that embeds each distinct text once over all its calls.

    An evaluation reads the same sentences many times: the English side of every ``en-xx`` group is the
    same messages, and the monolingual structure re-reads what the bitext scores embedded. Wrapping
    the model for one evaluation embeds each sentence once (the embeddings of every text seen are kept:
    384 floats each for mE5-small, 15 MB for 10,000 sentences).
    """

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.rows: dict[str, torch.Tensor] = {}
        self.encoded = 0
        """How many texts the wrapped encoder embedded (each distinct text once)."""

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), d]`` float32 embeddings in input order, as ``encoder.encode`` gives them."""
        if not texts:
            raise ValueError("nothing to encode")
        missing = [text for text in dict.fromkeys(texts) if text not in self.rows]
        if missing:
            embeddings = torch.as_tensor(self.encoder.encode(missing)).float()
            if embeddings.shape[0] != len(missing):
                raise ValueError(
                    f"encoder returned {embeddings.shape[0]} embeddings for {len(missing)} texts"
                )
            self.rows.update(zip(missing, embeddings, strict=True))
            self.encoded += len(missing)
        return torch.stack([self.rows[text] for text in texts])

    def __getattr__(self, name: str):  # name, revision, embedding_dim... of the wrapped model
        if name == "encoder":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.encoder, name)


def evaluate_pair_groups(
    encoder: TextEncoder,
    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    k: int = MARGIN_K,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, float]]:
    """Accuracy both ways, margin accuracy and xSIM per language pair (see :mod:`imascl_ray.eval.bitext`).

    Pairs are evaluated within their group: the candidates of a source are the targets of its own
    language pair. Groups are processed in sorted order; the result keeps that order.
    """
    results: dict[str, dict[str, float]] = {}
    for pair in sorted(groups):
        sources, targets = groups[pair]
        if len(sources) != len(targets):
            raise ValueError(f"{pair}: {len(sources)} sources but {len(targets)} targets")
        if not sources:
            raise ValueError(f"{pair}: no pairs")
        logger.info("evaluating %s: %d pairs", pair, len(sources))
        scores = bitext_scores(
            encode_distinct(encoder, list(sources)),
            encode_distinct(encoder, list(targets)),
            k=k,
            device=device,
        )
        results[pair] = {key: scores[key] for key in LOCAL_KEYS}
    return results


def flatten_local(results: Mapping[str, Mapping[str, float]], namespace: str = "local") -> dict[str, float]:
    """MLflow-ready metrics: ``{namespace}/{pair}/{acc|acc_src_to_tgt|...|xsim}`` and the means over pairs
    as ``{namespace}/mean/...`` (the mean accuracy is what training validation optimises)."""
    flat: dict[str, float] = {}
    for pair, entry in results.items():
        for key, short in SHORT_NAMES.items():
            flat[f"{namespace}/{pair}/{short}"] = float(entry[key])
    if results:
        for key, short in SHORT_NAMES.items():
            flat[f"{namespace}/mean/{short}"] = float(np.mean([entry[key] for entry in results.values()]))
    return flat
