"""Bitext evaluation speed: the project's chunked evaluator against mteb's own BitextMiningEvaluator.

Both get the same embeddings (synthetic aligned pairs: ``tgt = src + noise``, so retrieval is neither
perfect nor hopeless) and the same data (a ``datasets.Dataset`` with sentence1/sentence2). Timed:

* mteb: ``BitextMiningEvaluator.__call__`` (its dataloader, ``model.encode`` served from a lookup
  table, its chunked similarity search) plus ``AbsTaskBitextMining._compute_metrics`` (sklearn
  weighted precision/recall/f1, accuracy) -- one direction, sentence1 -> sentence2;
* ours, the same job: :func:`nearest_neighbours` + :func:`weighted_classification_scores`;
* ours, everything the paper needs: :func:`bitext_scores` (both directions, ratio margin k=4, xSIM).

It checks that accuracy and f1 agree (to one sentence, for float ties), prints both times and their
ratio, and ends with one JSON line. ``--quick`` finishes in well under 3 minutes on 2 CPU cores.

    python benchmarks/eval_speed.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch


def synthetic_pairs(n: int, dim: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, dim)).astype(np.float32)
    tgt = src + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return src, tgt


def time_mteb(src: np.ndarray, tgt: np.ndarray) -> tuple[float, dict[str, float]]:
    from datasets import Dataset
    from mteb import get_task
    from mteb._evaluators import BitextMiningEvaluator
    from mteb.abstasks.text.bitext_mining import AbsTaskBitextMining
    from mteb.timing import TimingStack

    from imascl_ray.eval.mteb_suite import MtebEncoder

    n = len(src)
    texts1, texts2 = [f"s{i}" for i in range(n)], [f"t{i}" for i in range(n)]
    row = {text: i for i, text in enumerate(texts1)} | {text: n + i for i, text in enumerate(texts2)}
    table = np.concatenate([src, tgt])

    class Lookup:
        def encode(self, texts):
            return torch.from_numpy(table[[row[t] for t in texts]])

    data = Dataset.from_dict({"sentence1": texts1, "sentence2": texts2})
    evaluator = BitextMiningEvaluator(
        data,
        task_metadata=get_task("Tatoeba").metadata,
        hf_split="test",
        hf_subset="fra-eng",
        pair_columns=[("sentence1", "sentence2")],
        timer=TimingStack(),
    )
    model = MtebEncoder(Lookup(), name="bench/lookup", revision="0")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        neighbours = evaluator(model, encode_kwargs={"batch_size": 1024})["sentence1-sentence2"]
    gold = list(zip(range(n), range(n), strict=True))
    metrics = AbsTaskBitextMining._compute_metrics(None, neighbours, gold)
    return time.perf_counter() - start, {key: float(value) for key, value in metrics.items()}


def time_ours(src: np.ndarray, tgt: np.ndarray, device: str | None) -> tuple[float, dict[str, float]]:
    from imascl_ray.eval.bitext import nearest_neighbours, weighted_classification_scores

    start = time.perf_counter()
    predictions = nearest_neighbours(src, tgt, device=device)
    metrics = weighted_classification_scores(predictions, np.arange(len(src)))
    if device and device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, metrics


def time_ours_full(src: np.ndarray, tgt: np.ndarray, device: str | None) -> tuple[float, dict[str, float]]:
    from imascl_ray.eval.bitext import bitext_scores

    start = time.perf_counter()
    scores = bitext_scores(src, tgt, device=device)
    return time.perf_counter() - start, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 pairs (well under 3 minutes on 2 cores)")
    parser.add_argument("--n", type=int, default=20000, help="pairs (default 20,000; --quick: 10,000)")
    parser.add_argument("--dim", type=int, default=384, help="embedding size (default 384, mE5-small)")
    parser.add_argument(
        "--noise", type=float, default=6.0, help="translation noise (default 6: partial accuracy at dim 384)"
    )
    parser.add_argument("--device", default=None, help="device for ours (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = 10000 if args.quick else args.n
    from imascl_ray.eval.chunked import resolve_device

    device = str(resolve_device(args.device))
    src, tgt = synthetic_pairs(n, args.dim, args.noise, args.seed)
    print(f"{n} pairs, dim {args.dim}, ours on {device}, {torch.get_num_threads()} CPU threads", flush=True)

    time_ours(src[:64], tgt[:64], device)  # warm-up (kernels, allocator) for both sides
    time_mteb(src[:64], tgt[:64])
    mteb_s, mteb_metrics = time_mteb(src, tgt)
    print(f"mteb BitextMiningEvaluator + metrics: {mteb_s:8.2f} s  {mteb_metrics}", flush=True)
    ours_s, ours_metrics = time_ours(src, tgt, device)
    print(f"ours, same one-direction job:        {ours_s:8.2f} s  {ours_metrics}", flush=True)
    full_s, full = time_ours_full(src, tgt, device)
    print(
        f"ours, both directions + margin/xSIM: {full_s:8.2f} s  accuracy {full['accuracy']:.4f} "
        f"xsim {full['xsim_error']:.4f}",
        flush=True,
    )

    tolerance = 1.0 / n  # one sentence: a float tie may fall differently between two matmul orders
    differences = {
        key: abs(ours_metrics[key] - mteb_metrics[key]) for key in ("accuracy", "f1", "precision", "recall")
    }
    agree = (
        all(value <= tolerance for value in differences.values())
        and abs(full["accuracy_src_to_tgt"] - mteb_metrics["accuracy"]) <= tolerance
    )
    ratio = mteb_s / ours_s
    print(
        f"speed-up (mteb time / ours): {ratio:.1f}x; numbers agree: {agree}"
        f" (max diff {max(differences.values()):.2e})"
    )
    summary = {
        "benchmark": "eval_speed",
        "n": n,
        "dim": args.dim,
        "device": device,
        "mteb_s": round(mteb_s, 4),
        "ours_s": round(ours_s, 4),
        "ours_full_s": round(full_s, 4),
        "speedup_vs_mteb": round(ratio, 2),
        "mteb_accuracy": mteb_metrics["accuracy"],
        "mteb_f1": mteb_metrics["f1"],
        "ours_accuracy": ours_metrics["accuracy"],
        "ours_f1": ours_metrics["f1"],
        "ours_accuracy_both_directions": full["accuracy"],
        "ours_xsim_error": full["xsim_error"],
        "agree": agree,
    }
    print(json.dumps(summary))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
