"""Monolingual structure: Spearman between two models' within-language cosine similarities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from imascl_ray.eval.structure import (
    flatten_structure,
    monolingual_structure,
    reference_embeddings,
    sentences_by_language,
    similarity_profile,
    structure_correlation,
)


class TableEncoder:
    """Encodes each text to a fixed vector of a table (unknown texts fail the test)."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return torch.stack([self.table[text] for text in texts])


GROUPS = {
    "en-fr": ([f"en {i}" for i in range(12)], [f"fr {i}" for i in range(12)]),
    "en-ja": ([f"en {i}" for i in range(6, 20)], [f"ja {i}" for i in range(14)]),
}


def _table(seed: int, dim: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    texts = {t for sources, targets in GROUPS.values() for t in (*sources, *targets)}
    return {text: torch.randn(dim, generator=generator) for text in sorted(texts)}


def test_correlation_is_scipys_spearman_over_the_upper_triangle():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 16, generator=generator), torch.randn(30, 16, generator=generator)
    ours = structure_correlation(a, b)
    unit_a, unit_b = (x / x.norm(dim=1, keepdim=True) for x in (a.double(), b.double()))
    i, j = np.triu_indices(30, k=1)
    expected = spearmanr((unit_a @ unit_a.T).numpy()[i, j], (unit_b @ unit_b.T).numpy()[i, j]).statistic
    assert ours == pytest.approx(expected, abs=1e-12)
    assert similarity_profile(a).shape == (30 * 29 // 2,)


def test_same_geometry_scores_one_and_a_scrambled_space_scores_lower():
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(40, 16, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
    assert structure_correlation(embeddings @ rotation * 3.0, embeddings) == pytest.approx(1.0)
    noisy = embeddings + 0.5 * torch.randn(40, 16, generator=generator)
    unrelated = torch.randn(40, 16, generator=generator)
    assert 0.3 < structure_correlation(noisy, embeddings) < 0.99
    assert abs(structure_correlation(unrelated, embeddings)) < 0.2


def test_sentences_by_language_gathers_every_side_and_samples_reproducibly():
    sentences = sentences_by_language(GROUPS)
    assert set(sentences) == {"en", "fr", "ja"}
    assert len(sentences["en"]) == 20  # en 0..19, shared by both pairs, once each
    sampled = sentences_by_language(GROUPS, max_sentences=5)
    assert all(len(texts) == 5 for texts in sampled.values())
    assert sampled == sentences_by_language(GROUPS, max_sentences=5)
    assert set(sampled["en"]) <= set(sentences["en"])


def test_monolingual_structure_per_language_with_a_reference_embedded_once():
    reference = TableEncoder(_table(2))
    generator = torch.Generator().manual_seed(3)
    trained_table = {t: v + 0.3 * torch.randn(8, generator=generator) for t, v in reference.table.items()}
    same = monolingual_structure(reference, reference, GROUPS)
    assert set(same) == {"en", "fr", "ja", "mean"}
    assert all(value == pytest.approx(1.0) for value in same.values())

    cached = reference_embeddings(reference, GROUPS)
    calls = reference.calls
    drifted = monolingual_structure(TableEncoder(trained_table), cached, GROUPS)
    assert reference.calls == calls  # the cached reference was not encoded again
    assert all(0.0 < drifted[lang] < 1.0 for lang in ("en", "fr", "ja"))
    assert drifted["mean"] == pytest.approx(np.mean([drifted[lang] for lang in ("en", "fr", "ja")]))
    assert flatten_structure(drifted, "ood")["ood/structure/mean"] == drifted["mean"]


def test_local_suite_logs_structure_only_when_given_a_reference():
    from imascl_ray.eval.runner import run_suite

    encoder = TableEncoder(_table(4))
    plain = run_suite(encoder, "local", groups=GROUPS)
    assert plain.structure == {} and not any("/structure/" in key for key in plain.metrics)
    with_reference = run_suite(encoder, "local", groups=GROUPS, reference=TableEncoder(_table(5)))
    assert set(with_reference.structure) == {"en", "fr", "ja", "mean"}
    assert with_reference.metrics["local/structure/fr"] == with_reference.structure["fr"]
    assert with_reference.results == plain.results  # the bitext numbers do not change


def test_the_table_foot_names_each_language_and_the_mean():
    from imascl_ray.eval.structure import describe_structure

    line = describe_structure({"en": 0.9812, "fr": 0.95, "mean": 0.9656}, "trained vs pretrained")
    assert "trained vs pretrained" in line and "en 0.981, fr 0.950; mean 0.966" in line
