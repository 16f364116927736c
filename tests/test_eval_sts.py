"""STS Spearman against scipy.stats.spearmanr / rankdata, including ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from imascl_ray.eval.sts import average_ranks, pairwise_cosine, spearman, sts_spearman


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_ranks_equal_scipy_rankdata_with_ties(seed):
    values = np.random.default_rng(seed).integers(0, 6, size=40).astype(float)
    np.testing.assert_allclose(average_ranks(values), rankdata(values, method="average"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, size=60).astype(float)  # gold STS scores tie a lot
    predicted = gold + rng.normal(scale=2.0, size=60)
    assert spearman(predicted, gold) == pytest.approx(spearmanr(predicted, gold).statistic, abs=1e-12)


def test_sts_spearman_uses_cosine_of_paired_rows():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    gold = rng.uniform(0, 5, size=50)
    cosines = np.array([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(pairwise_cosine(a, b), cosines, atol=1e-6)
    assert sts_spearman(a, b, gold) == pytest.approx(spearmanr(cosines, gold).statistic, abs=1e-6)
    # scaling one side changes no cosine, so no rank
    assert sts_spearman(3 * a, b, gold) == pytest.approx(sts_spearman(a, b, gold))


def test_constant_prediction_gives_nan_and_bad_shapes_are_refused():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])
