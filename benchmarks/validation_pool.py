"""How hard is the quickstart's validation? The pretrained student's bitext accuracy at several pool sizes.

The validation picks the best checkpoint and is what ASHA prunes on; with too few candidates per source
every model is at the ceiling and the number does not move. This embeds the quickstart's validation
split (1,000 pairs per language pair) once with the pretrained multilingual-e5-small and scores the
first 100, 300 and 1,000 pairs of each language pair as pools of candidates.

    python benchmarks/validation_pool.py          # a few minutes on 2 free cores
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from _common import emit, log, machine, rounded, set_test_environment

POOLS = (100, 300, 1000)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    set_test_environment()
    from imascl_ray.config import load_config, resolve_recipe
    from imascl_ray.eval.bitext import bitext_scores
    from imascl_ray.eval.local_suite import encode_distinct
    from imascl_ray.eval.runner import load_sentence_encoder
    from imascl_ray.preparation import resolve_model
    from imascl_ray.preparation.splits import load_source_corpus, split_corpus

    config = load_config(resolve_recipe("quickstart"))
    corpus = load_source_corpus(config, Path.home() / ".cache" / "imascl-ray" / "corpora")
    split, _ = split_corpus(config, corpus)
    groups = split.validation.groups()
    encoder = load_sentence_encoder(resolve_model(config.model.name))
    embedded = {
        pair: (encode_distinct(encoder, sources), encode_distinct(encoder, targets))
        for pair, (sources, targets) in sorted(groups.items())
    }
    table: dict[int, dict[str, float]] = {}
    for pool in POOLS:
        scores = {pair: bitext_scores(s[:pool], t[:pool])["accuracy"] for pair, (s, t) in embedded.items()}
        scores["mean"] = sum(scores.values()) / len(scores)
        table[pool] = {pair: rounded(value, 4) for pair, value in scores.items()}
        log(f"{pool} candidates: {table[pool]}")
    result = {
        "benchmark": "validation_pool",
        "accuracy": table,
        "validation_pairs": split.validation.pair_counts(),
        "train_pairs": split.train.pair_counts(),
        "machine": machine(),
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
