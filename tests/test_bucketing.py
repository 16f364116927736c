"""Length-bucketed encoding gives the plain step's embeddings, loss and gradients, with far less padding.

A tiny BERT (float32, dropout off) encodes sentences of 1 to 24 words. Bucketed (micro-batches of
similar length, put back in batch order) and plain (one padded batch per side), every loss kind of the
project must agree within 1e-5, on one process and on two gloo ranks (DDP, gathered negatives) against
the single-process plain step on the whole global batch.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from test_distributed import _init, _run_two_ranks, _teardown
from torch.nn.parallel import DistributedDataParallel

from imascl_ray.config import LossConfig
from imascl_ray.distributed import gather_inputs
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.engine.encode import (
    encode_bucketed,
    length_buckets,
    make_encoding,
    token_counts,
    unwrap,
)
from imascl_ray.losses import Loss, build_loss
from imascl_ray.testing import build_tiny_model, tiny_vocabulary

WORLD = 2
GLOBAL_BATCH = 16
NEGATIVES_PER_PAIR = 2
MICRO_BATCH = 5  # does not divide the slices: the last micro-batch is short
TAU, TEACHER_TAU = 0.1, 0.05
TOLERANCE = 1e-5
CASES = [
    {"name": "soft-tms-full", "loss": "soft", "labels": "priority", "lam": 0.1, "local": False},
    {"name": "soft-tms-local", "loss": "soft", "labels": "priority", "lam": 0.1, "local": True},
    {"name": "average-local", "loss": "soft", "labels": "average", "lam": None, "local": True},
    {"name": "infonce-full", "loss": "infonce", "lam": None, "local": False},
    {"name": "mse", "loss": "mse", "lam": None, "local": False},
    {"name": "hard-negatives-local", "loss": "hard_negatives", "lam": None, "local": True, "negatives": True},
    {"name": "hard-negatives-full", "loss": "hard_negatives", "lam": 0.1, "local": False, "negatives": True},
]


def case_loss(case: dict) -> Loss:
    """The loss object of ``case``, built by the factory the training loop uses."""
    return build_loss(
        LossConfig(
            name=case["loss"],
            labels=case.get("labels", "priority"),
            tau=TAU,
            teacher_tau=TEACHER_TAU,
            tms=case["lam"] is not None,
            lam=case["lam"] if case["lam"] is not None else 0.1,
            margin=0.05 if case["loss"] != "mse" else 0.0,
            local=case["local"],
        )
    )


def varied_texts(count: int, seed: int) -> list[str]:
    """Sentences of 1 to 24 words of the tiny vocabulary: lengths as uneven as real catalogues'."""
    words = [piece for piece in tiny_vocabulary() if piece.isascii() and piece.isalpha() and len(piece) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.choice([1, 2, 3, 4, 6, 9, 14, 24]))) for _ in range(count)]


def global_batch() -> dict:
    """Texts of the global batch and its teacher embeddings (teacher dim = the student's, for mse)."""
    generator = torch.Generator().manual_seed(3)
    return {
        "src": varied_texts(GLOBAL_BATCH, seed=1),
        "tgt": varied_texts(GLOBAL_BATCH, seed=2),
        "negatives": varied_texts(GLOBAL_BATCH * NEGATIVES_PER_PAIR, seed=3),
        "teacher_anchor": torch.randn(GLOBAL_BATCH, 32, generator=generator),
        "teacher_other": torch.randn(GLOBAL_BATCH, 32, generator=generator),
    }


def load_encoder(model_dir: str | Path) -> SentenceEncoder:
    encoder = SentenceEncoder.from_pretrained(model_dir, prefix="query: ", max_length=64)
    encoder.freeze_word_embeddings()  # as the quickstart trains; the frozen table gets no gradient
    return encoder.train()


def step(model, encoding: str, case: dict, batch: dict, rank: int = 0, world: int = 1) -> tuple[float, list]:
    """One forward-backward of ``case`` on this rank's slice; the global loss and the encoder's gradients.

    ``model`` is the encoder or DDP around it. The loss is the distributed one (a world of one: the
    single-process loss), the teacher embeddings of the whole global batch (as the loop looks them up).
    """
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    negative_rows = slice(rows.start * NEGATIVES_PER_PAIR, rows.stop * NEGATIVES_PER_PAIR)
    unwrap(model).zero_grad(set_to_none=True)
    strategy = make_encoding(encoding, model, micro_batch_size=MICRO_BATCH)
    negative_texts = batch["negatives"][negative_rows] if case.get("negatives") else None
    src, tgt, negatives = strategy.embed(batch["src"][rows], batch["tgt"][rows], negative_texts)
    loss = case_loss(case)(
        gather_inputs(src, tgt, batch["teacher_anchor"], batch["teacher_other"], negatives)
    ).value
    loss.backward()
    strategy.backward()
    value = loss.detach().clone()
    if world > 1:
        dist.all_reduce(value)
        value /= world
    grads = [p.grad.clone() for p in unwrap(model).parameters() if p.requires_grad]
    return float(value), grads


def assert_same_step(got: tuple[float, list], expected: tuple[float, list], message: str) -> None:
    assert got[0] == pytest.approx(expected[0], abs=TOLERANCE), message
    assert len(got[1]) == len(expected[1])
    for mine, theirs in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=TOLERANCE, msg=message)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("bucketing") / "tiny", dropout=0.0)


# ------------------------------------------------------------------------------------------------- plans
def test_buckets_cover_every_text_once_longest_first():
    lengths = np.array([3, 9, 9, 1, 5, 7, 2])
    buckets = length_buckets(lengths, 3)
    assert [list(b) for b in buckets] == [[1, 2, 5], [4, 0, 6], [3]]  # stable: equal lengths keep order
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="at least 1"):
        length_buckets(lengths, 0)


def test_bucketing_pads_far_less_and_keeps_the_batch_order(model_dir):
    encoder = load_encoder(model_dir).eval()
    texts = varied_texts(64, seed=9)
    lengths = token_counts(encoder, texts)
    assert lengths.tolist() == [int(m.sum()) for m in encoder.tokenize(texts)["attention_mask"]]
    padded_plain = len(texts) * lengths.max()
    padded_bucketed = sum(len(b) * lengths[b].max() for b in length_buckets(lengths, 8))
    assert padded_bucketed < 0.7 * padded_plain  # the compute bucketing saves on these lengths
    with torch.no_grad():
        plain = encoder(texts)
        bucketed, _ = encode_bucketed(encoder, texts, 8)
    torch.testing.assert_close(bucketed, plain, rtol=0, atol=TOLERANCE)


# ------------------------------------------------------------------------------------------ one process
@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bucketed_step_equals_the_plain_step_on_one_process(model_dir, case):
    encoder, batch = load_encoder(model_dir), global_batch()
    plain = step(encoder, "plain", case, batch)
    bucketed = step(encoder, "bucketed", case, batch)
    assert any(float(g.abs().max()) > 1e-4 for g in plain[1])  # the comparison is not of zeros
    assert_same_step(bucketed, plain, case["name"])


# ------------------------------------------------------------------------------------------ two ranks
def _bucketed_ranks(rank: int, init_file: str, out_dir: str) -> None:
    """Each case's bucketed DDP step on this rank's slice; saves the global loss and the gradients."""
    _init(rank, init_file)
    batch = global_batch()
    model = DistributedDataParallel(load_encoder(Path(out_dir) / "tiny"))
    results = [step(model, "bucketed", case, batch, rank, WORLD) for case in CASES]
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    del model
    _teardown()


def test_two_gloo_ranks_bucketed_equal_one_process_plain(tmp_path):
    build_tiny_model(tmp_path / "tiny", dropout=0.0)
    _run_two_ranks(_bucketed_ranks, tmp_path, timeout=240)
    encoder, batch = load_encoder(tmp_path / "tiny"), global_batch()
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for index, case in enumerate(CASES):
        expected = step(encoder, "plain", case, batch)
        for rank in range(WORLD):
            assert_same_step(per_rank[rank][index], expected, f"{case['name']} rank {rank}")


def test_the_config_names_the_bad_key():
    from imascl_ray.config import load_config
    from imascl_ray.errors import InputError

    assert load_config(None, []).scaling.encoding == "bucketed"  # on by default
    with pytest.raises(InputError, match=r"scaling\.micro_batch_size must be at least 1"):
        load_config(None, ["scaling.micro_batch_size=0"])
    with pytest.raises(InputError, match=r"scaling\.encoding must be one of 'plain', 'bucketed', 'cached'"):
        load_config(None, ["scaling.encoding=fast"])
