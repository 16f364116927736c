"""Monolingual structure: does a trained model keep the similarity geometry within each language?

The paper's argument for soft labels (and for TMS) is that hard labels pull translations together at
the cost of the monolingual similarity structure: which sentences of one language are close to which.
This module measures exactly that, without gold scores: within each language, the Spearman correlation
between the trained model's and a reference model's (by default the pretrained student's) cosine
similarities over all pairs of held-out sentences. 1.0 means the ranking of similarities is unchanged;
a model that collapsed or scrambled its monolingual space scores lower.

``groups`` is the ``Corpus.groups()`` shape (``{"en-fr": (sources, targets)}``); a language's sentences
are the distinct texts on its side of every pair it is in (English gathers them from all ``en-xx``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from imascl_ray.eval.chunked import l2_normalize
from imascl_ray.eval.local_suite import TextEncoder, encode_distinct
from imascl_ray.eval.sts import spearman

MAX_SENTENCES = 400
"""Sentences per language at most: 400 give 79,800 similarity pairs, enough for a stable rho."""


def sentences_by_language(
    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    max_sentences: int = MAX_SENTENCES,
    seed: int = 0,
) -> dict[str, list[str]]:
    """The distinct sentences of each language in ``groups``, a seeded sample of at most ``max_sentences``."""
    texts: dict[str, dict[str, None]] = {}
    for pair in sorted(groups):
        src_lang, tgt_lang = pair.split("-", 1)
        sources, targets = groups[pair]
        texts.setdefault(src_lang, {}).update(dict.fromkeys(sources))
        texts.setdefault(tgt_lang, {}).update(dict.fromkeys(targets))
    chosen = {}
    for language in sorted(texts):
        distinct = sorted(texts[language])
        if len(distinct) > max_sentences:
            rng = np.random.default_rng([seed, len(language), *language.encode("utf-8")])
            distinct = [distinct[i] for i in sorted(rng.choice(len(distinct), max_sentences, replace=False))]
        chosen[language] = distinct
    return chosen


def similarity_profile(embeddings: torch.Tensor) -> np.ndarray:
    """The cosine similarities of every unordered pair of rows (upper triangle, float64)."""
    unit = l2_normalize(embeddings).double()
    rows, cols = torch.triu_indices(unit.shape[0], unit.shape[0], offset=1)
    return (unit @ unit.T)[rows, cols].numpy()


def structure_correlation(embeddings: torch.Tensor, reference: torch.Tensor) -> float:
    """Spearman's rho between the pairwise cosines of two embeddings of the same sentences."""
    if embeddings.shape[0] != reference.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} and {reference.shape[0]} sentences: the same ones needed")
    if embeddings.shape[0] < 3:
        raise ValueError("monolingual structure needs 3 or more sentences")
    return spearman(similarity_profile(embeddings), similarity_profile(reference))


def monolingual_structure(
    encoder: TextEncoder,
    reference: TextEncoder | Mapping[str, torch.Tensor],
    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    max_sentences: int = MAX_SENTENCES,
) -> dict[str, float]:
    """``{language: rho}`` and ``"mean"``: how well ``encoder`` keeps ``reference``'s geometry.

    ``reference`` is an encoder, or the embeddings :func:`reference_embeddings` returned for the same
    ``groups`` (a study that compares many models with one reference embeds the reference once).
    """
    sentences = sentences_by_language(groups, max_sentences=max_sentences)
    if not isinstance(reference, Mapping):
        reference = reference_embeddings(reference, groups, max_sentences=max_sentences)
    results = {}
    for language, texts in sentences.items():
        if len(texts) < 3:
            continue
        results[language] = structure_correlation(encode_distinct(encoder, texts), reference[language])
    if results:
        results["mean"] = float(np.mean(list(results.values())))
    return results


def reference_embeddings(
    reference: TextEncoder,
    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    *,
    max_sentences: int = MAX_SENTENCES,
) -> dict[str, torch.Tensor]:
    """The reference model's embeddings of each language's sample, for :func:`monolingual_structure`."""
    sentences = sentences_by_language(groups, max_sentences=max_sentences)
    return {lang: encode_distinct(reference, texts) for lang, texts in sentences.items() if len(texts) >= 3}


def flatten_structure(results: Mapping[str, float], namespace: str = "local") -> dict[str, float]:
    """MLflow-ready: ``{namespace}/structure/{language}`` and ``{namespace}/structure/mean``."""
    return {f"{namespace}/structure/{language}": float(value) for language, value in results.items()}


def describe_structure(structure: Mapping[str, float], compared: str) -> str:
    """One line for a table's foot: the structure kept per language and on average (``compared`` says
    which two models, e.g. ``"trained vs pretrained"``)."""
    languages = ", ".join(f"{lang} {value:.3f}" for lang, value in structure.items() if lang != "mean")
    return (
        f"Monolingual structure kept (Spearman of within-language cosines, {compared}; 1 = unchanged): "
        f"{languages}; mean {structure['mean']:.3f}"
    )
