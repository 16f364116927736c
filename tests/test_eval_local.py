"""The local suite (held-out pair files; also the training validation) on a deterministic encoder."""

from __future__ import annotations

import numpy as np
import pytest

from imascl_ray.eval.hashing_encoder import HashingEncoder
from imascl_ray.eval.local_suite import (
    LOCAL_KEYS,
    EncodeOnce,
    encode_distinct,
    evaluate_pair_groups,
    flatten_local,
)

WORDS = ["red", "blue", "green", "cat", "dog", "house", "tree", "river", "stone", "bird", "sun", "moon"]


def make_groups(seed: int = 0, n: int = 40) -> dict[str, tuple[list[str], list[str]]]:
    """Pseudo-translations: the target shares the number and some words with its source."""
    rng = np.random.default_rng(seed)
    groups = {}
    for pair, marker in (("en-fr", "le"), ("en-ru", "на")):
        sources, targets = [], []
        for i in range(n):
            words = list(rng.choice(WORDS, 4))
            sources.append(f"{i % 17} " + " ".join(words))
            targets.append(f"{marker} {i % 17} " + " ".join(words[:2] + list(rng.choice(WORDS, 2))))
        groups[pair] = (sources, targets)
    return groups


def brute_force(encoder, sources, targets):
    a = encoder.encode(sources).numpy().astype(np.float64)
    b = encoder.encode(targets).numpy().astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    sim = a @ b.T
    gold = np.arange(len(sources))
    return (sim.argmax(1) == gold).mean(), (sim.argmax(0) == gold).mean()


def test_results_have_the_documented_shape_and_match_brute_force():
    encoder = HashingEncoder(dim=48)
    groups = make_groups()
    results = evaluate_pair_groups(encoder, groups)
    assert list(results) == ["en-fr", "en-ru"]
    for pair, (sources, targets) in groups.items():
        entry = results[pair]
        assert tuple(entry) == LOCAL_KEYS
        forward, backward = brute_force(encoder, sources, targets)
        assert 0 < forward < 1  # the data leaves room for mistakes
        assert entry["accuracy_src_to_tgt"] == pytest.approx(forward)
        assert entry["accuracy_tgt_to_src"] == pytest.approx(backward)
        assert entry["accuracy"] == pytest.approx((forward + backward) / 2)
        assert entry["n"] == len(sources)
        assert 0 <= entry["xsim_error"] <= 1 and 0 <= entry["margin_accuracy"] <= 1


def test_repeated_sentences_are_encoded_once_and_keep_their_rows():
    encoder = HashingEncoder(dim=16)
    texts = ["a b", "c d", "a b", "e", "c d"]
    np.testing.assert_allclose(
        encode_distinct(encoder, texts).numpy(), encoder.encode(texts).numpy(), atol=1e-6
    )


class CountingEncoder(HashingEncoder):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[str] = []

    def encode(self, texts, **kwargs):
        self.seen.extend(texts)
        return super().encode(texts, **kwargs)


def test_an_evaluation_embeds_each_sentence_once_over_all_groups_and_scores_the_same():
    groups = make_groups()
    groups["en-ja"] = (groups["en-fr"][0], [f"ja {text}" for text in groups["en-fr"][1]])  # English again
    counting = CountingEncoder(dim=48)
    once = EncodeOnce(counting)
    direct = evaluate_pair_groups(HashingEncoder(dim=48), groups)
    for pair, entry in evaluate_pair_groups(once, groups).items():
        assert entry == pytest.approx(direct[pair])
    evaluate_pair_groups(once, groups)  # a second read of the same sentences embeds nothing
    distinct = {text for sources, targets in groups.values() for text in (*sources, *targets)}
    assert sorted(counting.seen) == sorted(distinct) and once.encoded == len(distinct)
    assert once.embedding_dim == 48  # the wrapped model's attributes show through


def test_flat_metrics_for_mlflow():
    results = {
        "en-fr": {
            "accuracy": 0.8,
            "accuracy_src_to_tgt": 0.7,
            "accuracy_tgt_to_src": 0.9,
            "margin_accuracy": 0.85,
            "xsim_error": 0.1,
            "n": 10,
        },
        "en-ru": {
            "accuracy": 0.6,
            "accuracy_src_to_tgt": 0.5,
            "accuracy_tgt_to_src": 0.7,
            "margin_accuracy": 0.65,
            "xsim_error": 0.3,
            "n": 10,
        },
    }
    flat = flatten_local(results)
    assert flat["local/en-fr/acc"] == 0.8
    assert flat["local/en-ru/xsim"] == 0.3
    assert flat["local/mean/acc"] == pytest.approx(0.7)
    assert flat["local/mean/margin_acc"] == pytest.approx(0.75)
    assert not any(key.endswith("/n") for key in flat)


def test_unaligned_group_is_refused():
    with pytest.raises(ValueError, match="en-fr"):
        evaluate_pair_groups(HashingEncoder(), {"en-fr": (["a", "b"], ["c"])})
