"""GPU efficiency of a training step: a base-size encoder in bf16, pairs/s and model FLOPs utilisation.

The model is a BERT-base-sized encoder (hidden 768, 12 layers, 12 heads, FFN 3072, multilingual-e5-base's
250,002-piece vocabulary) with *random* weights from that config (GPU machines have no hub), inside the
project's :class:`~imascl_ray.encoder.SentenceEncoder` (mean pooling, L2 normalisation). Inputs are random
token ids, every sequence exactly ``--seq-len`` tokens (128; no padding), or with ``--ragged`` each of a
seeded random length between a quarter of ``--seq-len`` and all of it, padded to ``--seq-len`` (the
project's encoder runs them unpadded, :mod:`imascl_ray.unpad`, unless ``--padded``). A step:
encode the source and target sides with gradient under the project's bf16 autocast, the soft loss with
cached-teacher labels (:class:`imascl_ray.losses.SoftContrastiveLoss`: Priority, TMS ``lam=0.1``, as the
training loop calls it), backward, gradient clipping, the project's AdamW (fused), synchronise.

Model FLOPs per step (the usual MFU convention: matmuls only, backward = 2 x forward, embeddings and
optimiser not counted), summed over the *real* tokens of every sequence of length ``l``:
``3 * l * (2 * P_layers + 4 * L * l * hidden)``, with ``P_layers`` the parameters of the transformer layers'
matmuls (padding does no useful work and is not counted). MFU is achieved
FLOP/s over ``--peak-tflops`` (default: the dense bf16 peak of known GPUs, e.g. 989 for H100 SXM / H200).
Target: >= 40 %.

``--compare-st`` also times sentence-transformers' ``MultipleNegativesSymmetricRankingLoss`` step on the
same model weights and token ids ((a) vs (c) of ``train_throughput.py``, on the GPU; no tokenisation in
either).

On a machine without CUDA it prints why and exits 2 (``--smoke`` runs a tiny model on the CPU instead, for
tests). The last line of stdout is one JSON object.

    python benchmarks/gpu_step.py                      # H100/H200: batch 256 pairs, seq len 128
    python benchmarks/gpu_step.py --batch 512 --compare-st
    python benchmarks/gpu_step.py --smoke              # tiny, CPU, seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, fill_defaults, log, machine, median, rounded, set_test_environment

PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 80GB HBM3": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.1,
    "A10G": 70.0,
}
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a known GPU by the name CUDA reports (longest matching key wins)."""
    matches = [key for key in PEAK_BF16_TFLOPS if all(part in device_name for part in key.split())]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def model_flops_per_step(config: Any, pairs: int, seq_len: int) -> float:
    """Training FLOPs of the encoder for one step (see the module docstring)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    matmul_params = layers * (4 * d * d + 2 * d * ff)
    tokens = 2 * pairs * seq_len
    return 3.0 * tokens * (2 * matmul_params + 4 * layers * seq_len * d)


def model_flops_for_lengths(config: Any, lengths: Any) -> float:
    """Training FLOPs of one step over sequences of these real lengths (see the module docstring)."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    matmul_params = layers * (4 * d * d + 2 * d * ff)
    return float(sum(3.0 * int(n) * (2 * matmul_params + 4 * layers * int(n) * d) for n in lengths))


def sequence_lengths(args: Any, seed: int) -> Any:
    """Real tokens of each of ``args.batch`` sequences: all ``seq_len``, or seeded ragged lengths."""
    import torch

    if not args.ragged:
        return torch.full((args.batch,), args.seq_len, dtype=torch.long)
    generator = torch.Generator().manual_seed(10_000 + seed)
    return torch.randint(max(2, args.seq_len // 4), args.seq_len + 1, (args.batch,), generator=generator)


def build_encoder(sizes: dict[str, int], seq_len: int, device):
    from transformers import BertConfig, BertModel

    from imascl_ray.encoder import SentenceEncoder

    config = BertConfig(
        vocab_size=250_002 if sizes is BASE else 1000,
        max_position_embeddings=max(514, seq_len + 2),
        type_vocab_size=1,
        **sizes,
    )
    model = BertModel(config, add_pooling_layer=False)
    encoder = SentenceEncoder(model, tokenizer=None, name="random-bert", max_length=seq_len)
    return encoder.to(device).train(), config


def random_features(config: Any, pairs: int, seq_len: int, device, seed: int, lengths: Any = None):
    """Random token ids ``[pairs, seq_len]``; past each row's length (``lengths``) padding, masked."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (pairs, seq_len), generator=generator)
    mask = torch.ones_like(ids)
    if lengths is not None:
        mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
        ids = ids.masked_fill(mask == 0, config.pad_token_id)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "token_type_ids": torch.zeros_like(ids).to(device),
    }


def step_features(config: Any, args: Any, device, i: int) -> list[dict[str, Any]]:
    """Step ``i``'s source and target features (the same for every variant)."""
    return [
        random_features(config, args.batch, args.seq_len, device, seed, sequence_lengths(args, seed))
        for seed in (2 * i, 2 * i + 1)
    ]


def project_step(encoder, config, args, device, precision):
    """(a): the project's encoder, soft loss with cached-teacher labels, AdamW; returns a callable."""
    import torch

    from imascl_ray.distributed import gather_inputs
    from imascl_ray.engine.optim import build_optimizer
    from imascl_ray.engine.precision import autocast
    from imascl_ray.losses import SoftContrastiveLoss

    optimizer = build_optimizer(encoder.parameters(), lr=3e-5)
    teacher = torch.nn.functional.normalize(torch.randn(args.batch, 384, device=device), dim=1)
    soft = SoftContrastiveLoss("priority", tau=0.1, teacher_tau=0.05, lam=0.1)

    def step(i: int) -> None:
        src_features, tgt_features = step_features(config, args, device, i)
        with autocast(precision, device):
            src, tgt = encoder.embed_tokens(src_features), encoder.embed_tokens(tgt_features)
            loss = soft(gather_inputs(src, tgt, teacher)).value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step.transformer = encoder.model
    return step


def st_step(encoder, config, args, device):
    """(c): sentence-transformers' MNSRL step on the same weights and token ids, bf16 autocast, fused
    AdamW (the trainer's defaults); returns a callable."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss

    from imascl_ray.testing import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="imascl-gpu-st-") as folder:
        encoder.model.save_pretrained(folder, safe_serialization=True)
        tokenizer_dir = build_tiny_model(Path(folder) / "tokenizer")  # ids are given: any tokenizer loads
        for file in tokenizer_dir.iterdir():
            if "token" in file.name or file.name == "vocab.txt":
                (Path(folder) / file.name).write_bytes(file.read_bytes())
        model = SentenceTransformer(folder, device=str(device))
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loss_module = MultipleNegativesSymmetricRankingLoss(model, scale=10.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, fused=True)
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step(i: int) -> None:
        features = step_features(config, args, device, i)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_module(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    step.transformer = model[0].auto_model
    return step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (for tests)")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--batch", type=int, default=None, help="pairs per step (default 256; smoke 8)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; quick 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="default bf16")
    parser.add_argument("--compare-st", action="store_true", help="also time sentence-transformers (c)")
    parser.add_argument("--ragged", action="store_true", help="sequences of random lengths, padded")
    parser.add_argument("--padded", action="store_true", help="the project's encoder without unpadding")
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {
        "batch": 8 if smoke else 256,
        "seq_len": 16 if smoke else 128,
        "steps": 2 if smoke else 8 if args.quick else 20,
        "precision": "fp32" if smoke else "bf16",
    }
    fill_defaults(args, defaults)
    if smoke:
        args.warmup = 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    import torch

    from imascl_ray.engine.precision import resolve_precision

    if not args.smoke and not torch.cuda.is_available():
        message = "gpu_step.py needs a CUDA GPU and none is visible here; --smoke runs a tiny CPU check"
        print(message, file=sys.stderr)
        emit({"benchmark": "gpu_step", "skipped": message, "machine": machine()})
        raise SystemExit(2)
    device = torch.device("cpu" if args.smoke else "cuda")
    peak = args.peak_tflops
    if peak is None and device.type == "cuda":
        peak = peak_tflops(torch.cuda.get_device_name())
    if peak is None:
        peak = 1.0 if args.smoke else None
    if peak is None:
        raise SystemExit(f"unknown GPU {torch.cuda.get_device_name()!r}: pass --peak-tflops")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    encoder, config = build_encoder(TINY if args.smoke else BASE, args.seq_len, device)
    encoder.unpad = not args.padded
    precision = resolve_precision(args.precision, device)
    variants = {"soft": project_step(encoder, config, args, device, precision)}
    if args.compare_st:
        variants["st"] = st_step(encoder, config, args, device)
    log(f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M parameters on {device}; warming up")
    for i in range(args.warmup):
        for step in variants.values():
            step(i)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.steps):
        for name, step in variants.items():
            started = time.perf_counter()
            step(args.warmup + i)
            times[name].append(time.perf_counter() - started)
    from imascl_ray.unpad import count_dense_tokens

    timed = range(args.warmup, args.warmup + args.steps)
    per_step = [torch.cat([sequence_lengths(args, 2 * i), sequence_lengths(args, 2 * i + 1)]) for i in timed]
    flops = sum(model_flops_for_lengths(config, lengths) for lengths in per_step) / args.steps  # a mean step
    real_tokens = sum(int(lengths.sum()) for lengths in per_step) / args.steps
    dense: dict[str, float] = {}
    for name, step in variants.items():
        with count_dense_tokens(step.transformer) as count:
            step(args.warmup + args.steps)
        dense[name] = rounded(count.fraction)
    step_s = {name: median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "benchmark": "gpu_step",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": "tiny random BERT" if args.smoke else "random BERT-base (768 x 12, vocab 250,002)",
        "precision": args.precision,
        "pairs": args.batch,
        "seq_len": args.seq_len,
        "ragged": args.ragged,
        "unpadded": encoder.unpad,
        "real_tokens_per_step": rounded(real_tokens),
        "padding_fraction": rounded(1 - real_tokens / (2 * args.batch * args.seq_len)),
        "dense_real_token_fraction": dense,
        "median_step_s": {name: rounded(value, 4) for name, value in step_s.items()},
        "pairs_per_s": {name: rounded(args.batch / value, 4) for name, value in step_s.items()},
        "model_tflops_per_step": rounded(flops / 1e12, 4),
        "peak_tflops": peak,
        "mfu": rounded(flops / step_s["soft"] / (peak * 1e12)),
        "target_mfu": 0.40,
    }
    if "st" in step_s:
        result["soft_over_st"] = rounded(step_s["st"] / step_s["soft"])
    if device.type == "cuda":
        result["max_memory_gib"] = rounded(torch.cuda.max_memory_allocated() / 2**30)
    result["machine"] = machine()
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
