"""Bitext metrics against independent computations: brute-force NumPy neighbours, sklearn's weighted
scores, mteb's own evaluator, a hand-worked ratio-margin example and a loop-by-loop LASER xSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from imascl_ray.eval.bitext import (
    bitext_scores,
    margin_neighbours,
    nearest_neighbours,
    retrieval_accuracy,
    weighted_classification_scores,
    xsim_error,
)
from imascl_ray.eval.chunked import chunked_topk


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy_pairs(n: int, d: int = 16, noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Aligned embeddings whose translations are close but not always nearest."""
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, d)).astype(np.float32)
    tgt = src + noise * rng.standard_normal((n, d)).astype(np.float32)
    return src, tgt


def laser_margin_retrieval(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """LASER's xsim.py (_score_knn with ratio margin), written with plain loops over a full matrix."""
    sim = unit(x.astype(np.float64)) @ unit(y.astype(np.float64)).T
    k_fwd, k_bwd = min(k, y.shape[0]), min(k, x.shape[0])
    fwd_ind = np.argsort(-sim, axis=1)[:, :k_fwd]
    fwd_mean = np.array([sim[i, fwd_ind[i]].mean() for i in range(len(x))])
    bwd_mean = np.array([np.sort(sim[:, j])[::-1][:k_bwd].mean() for j in range(len(y))])
    best = []
    for i in range(len(x)):
        scores = [sim[i, j] / ((fwd_mean[i] + bwd_mean[j]) / 2) for j in fwd_ind[i]]
        best.append(fwd_ind[i][int(np.argmax(scores))])
    return np.array(best)


def test_chunked_topk_matches_brute_force_across_tiles():
    rng = np.random.default_rng(1)
    queries, keys = rng.standard_normal((37, 8)), rng.standard_normal((53, 8))
    values, indices = chunked_topk(queries, keys, 5, query_chunk=7, key_chunk=11, device="cpu")
    full = queries @ keys.T
    expected = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_allclose(values.numpy(), np.take_along_axis(full, expected, 1), rtol=1e-5, atol=1e-5)


def test_chunked_topk_clips_k_to_the_number_of_keys():
    values, indices = chunked_topk(np.eye(3), np.eye(3)[:2], 10, device="cpu")
    assert values.shape == indices.shape == (3, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_chunked_topk_on_gpu_equals_cpu():
    rng = np.random.default_rng(2)
    queries, keys = rng.standard_normal((300, 32)), rng.standard_normal((500, 32))
    cpu = chunked_topk(queries, keys, 4, device="cpu")
    gpu = chunked_topk(queries, keys, 4, query_chunk=64, key_chunk=128, device="cuda")
    np.testing.assert_array_equal(cpu[1].numpy(), gpu[1].numpy())


def test_accuracy_both_directions_matches_numpy_argmax():
    src, tgt = noisy_pairs(120)
    scores = bitext_scores(src, tgt, query_chunk=16, key_chunk=32, device="cpu")
    sim = unit(src) @ unit(tgt).T
    gold = np.arange(120)
    forward = (sim.argmax(axis=1) == gold).mean()
    backward = (sim.argmax(axis=0) == gold).mean()
    assert 0.2 < forward < 0.95 and 0.2 < backward < 0.95  # a test data set where retrieval can fail
    assert scores["accuracy_src_to_tgt"] == pytest.approx(forward)
    assert scores["accuracy_tgt_to_src"] == pytest.approx(backward)
    assert scores["accuracy"] == pytest.approx((forward + backward) / 2)
    assert scores["n"] == 120
    assert retrieval_accuracy(src, tgt) == pytest.approx((forward + backward) / 2)
    np.testing.assert_array_equal(nearest_neighbours(src, tgt), sim.argmax(axis=1))


def test_weighted_scores_equal_sklearn_with_repeated_and_unseen_labels():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 30, size=200)
    predictions = np.where(rng.random(200) < 0.5, gold, rng.integers(0, 45, size=200))
    ours = weighted_classification_scores(predictions, gold)
    assert ours["f1"] == pytest.approx(f1_score(gold, predictions, average="weighted", zero_division=0))
    assert ours["precision"] == pytest.approx(
        precision_score(gold, predictions, average="weighted", zero_division=0)
    )
    assert ours["recall"] == pytest.approx(
        recall_score(gold, predictions, average="weighted", zero_division=0)
    )
    assert ours["accuracy"] == pytest.approx(accuracy_score(gold, predictions))


def test_weighted_f1_equals_mtebs_bitext_metrics():
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining

    src, tgt = noisy_pairs(80, seed=4)
    predictions = nearest_neighbours(src, tgt)
    gold = list(zip(range(80), range(80), strict=True))
    theirs = AbsTaskBitextMining._compute_metrics(None, [{"corpus_id": int(j)} for j in predictions], gold)
    ours = weighted_classification_scores(predictions, np.arange(80))
    for key in ("precision", "recall", "f1", "accuracy"):
        assert ours[key] == pytest.approx(theirs[key])
    assert ours["f1"] < ours["accuracy"]  # duplicated predictions cost precision: f1 is not accuracy


def test_neighbours_and_f1_equal_mtebs_bitext_evaluator_on_the_same_embeddings():
    from datasets import Dataset
    from mteb import get_task
    from mteb._evaluators import BitextMiningEvaluator
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining
    from mteb.timing import TimingStack

    from imascl_ray.eval.mteb_suite import MtebEncoder

    src, tgt = noisy_pairs(150, seed=5)
    texts1, texts2 = [f"s{i}" for i in range(150)], [f"t{i}" for i in range(150)]
    table = dict(zip(texts1 + texts2, np.concatenate([src, tgt]), strict=True))

    class Lookup:
        def encode(self, texts):
            return torch.from_numpy(np.stack([table[t] for t in texts]))

    data = Dataset.from_dict({"sentence1": texts1, "sentence2": texts2})
    evaluator = BitextMiningEvaluator(
        data,
        task_metadata=get_task("Tatoeba").metadata,
        hf_split="test",
        hf_subset="fra-eng",
        pair_columns=[("sentence1", "sentence2")],
        timer=TimingStack(),
    )
    adapter = MtebEncoder(Lookup(), name="test/lookup", revision="r")
    neighbours = evaluator(adapter, encode_kwargs={"batch_size": 32})["sentence1-sentence2"]
    theirs = AbsTaskBitextMining._compute_metrics(
        None, neighbours, list(zip(range(150), range(150), strict=True))
    )
    np.testing.assert_array_equal([x["corpus_id"] for x in neighbours], nearest_neighbours(src, tgt))
    ours = bitext_scores(src, tgt)
    assert ours["f1_src_to_tgt"] == pytest.approx(theirs["f1"])
    assert ours["accuracy_src_to_tgt"] == pytest.approx(theirs["accuracy"])


def embeddings_with_cosines(similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors x_i, y_j with x_i . y_j = S[i, j] exactly (columns of S must have norm <= 1)."""
    n, m = similarities.shape
    x = np.hstack([np.eye(n), np.zeros((n, m))])
    residual = np.sqrt(1 - (similarities**2).sum(axis=0))
    y = np.hstack([similarities.T, np.diag(residual)])
    return x, y


def test_hand_worked_ratio_margin_example():
    # Target 0 is a hub: every source's nearest target by cosine. With k = 2:
    #   source k-NN means (rows):    s0 (.60+.30)/2 = .45, s1 (.50+.45)/2 = .475, s2 (.45+.40)/2 = .425
    #   target k-NN means (columns): t0 (.60+.50)/2 = .55, t1 (.45+.30)/2 = .375, t2 (.40+.20)/2 = .30
    #   s1: margin(t0) = .50 / ((.475+.55)/2) = .976 < margin(t1) = .45 / ((.475+.375)/2) = 1.059 -> t1
    #   s2: margin(t0) = .45 / ((.425+.55)/2) = .923 < margin(t2) = .40 / ((.425+.30)/2) = 1.103 -> t2
    similarities = np.array([[0.60, 0.30, 0.20], [0.50, 0.45, 0.10], [0.45, 0.10, 0.40]])
    src, tgt = embeddings_with_cosines(similarities)
    np.testing.assert_allclose(src @ tgt.T, similarities, atol=1e-12)
    np.testing.assert_array_equal(nearest_neighbours(src, tgt), [0, 0, 0])
    np.testing.assert_array_equal(margin_neighbours(src, tgt, k=2), [0, 1, 2])
    scores = bitext_scores(src, tgt, k=2)
    assert scores["accuracy_src_to_tgt"] == pytest.approx(1 / 3)
    assert scores["accuracy_tgt_to_src"] == pytest.approx(1.0)  # columns: .60, .45, .40 on the diagonal
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["margin_accuracy"] == pytest.approx(1.0)
    assert scores["xsim_error"] == pytest.approx(0.0)
    # class 0 is predicted 3 times, right once: f1_0 = 2*1/(3+1) = 1/2; classes 1, 2: 0; weights 1/3 each
    assert scores["f1_src_to_tgt"] == pytest.approx(1 / 6)
    assert xsim_error(src, tgt, k=2) == 0.0
    assert xsim_error(src, tgt, k=1) == pytest.approx(2 / 3)  # k = 1 keeps only the cosine neighbour


@pytest.mark.parametrize("k", [1, 4, 7])
def test_margin_retrieval_and_xsim_match_laser_reference(k):
    src, tgt = noisy_pairs(90, noise=1.2, seed=6)
    expected = laser_margin_retrieval(src, tgt, k)
    np.testing.assert_array_equal(margin_neighbours(src, tgt, k=k), expected)
    scores = bitext_scores(src, tgt, k=k, query_chunk=13, key_chunk=17)
    gold = np.arange(90)
    assert scores["xsim_error"] == pytest.approx((expected != gold).mean())
    backward = laser_margin_retrieval(tgt, src, k)
    assert scores["xsim_error_tgt_to_src"] == pytest.approx((backward != gold).mean())
    assert scores["margin_accuracy"] == pytest.approx(
        ((expected == gold).mean() + (backward == gold).mean()) / 2
    )


def test_mismatched_or_empty_pairs_are_refused():
    with pytest.raises(ValueError, match="aligned"):
        bitext_scores(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="no pairs"):
        bitext_scores(np.ones((0, 4)), np.ones((0, 4)))
