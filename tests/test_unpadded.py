"""Unpadded encoding gives the padded model's embeddings and gradients, and no padding reaches a dense layer.

The reference is the same encoder with ``unpad=False`` (the Hugging Face model's own forward on the padded
batch). Tiny BERT and tiny XLM-R models (fp32, dropout off) encode ragged batches; embeddings must agree
within 1e-5 (max abs), the parameters' gradients too, for mean and cls pooling, a batch of one, and each
encoding strategy's whole loss step.
"""

from __future__ import annotations

import logging

import pytest
import torch
from test_bucketing import CASES, assert_same_step, global_batch, load_encoder, step, varied_texts
from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

from imascl_ray.encoder import SentenceEncoder
from imascl_ray.unpad import Unpadding, count_dense_tokens, unsupported_reason

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from imascl_ray.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("unpadded") / "tiny", dropout=0.0)


def tiny_xlm_roberta(model_dir) -> SentenceEncoder:
    """An XLM-R (positions counted from ``padding_idx + 1``, skipping padding) on the tiny vocabulary."""
    bert = SentenceEncoder.from_pretrained(model_dir)
    config = XLMRobertaConfig(
        vocab_size=bert.tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=bert.tokenizer.pad_token_id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(1)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    return SentenceEncoder(model, bert.tokenizer, name="tiny-xlmr", max_length=64)


def forward_and_grads(encoder: SentenceEncoder, texts: list[str], unpad: bool):
    """Embeddings (with gradient) and every trainable parameter's gradient of a fixed random loss."""
    encoder.unpad = encoder.unpad if unpad is None else unpad
    encoder.zero_grad(set_to_none=True)
    embeddings = encoder(texts)
    weights = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(5))
    (embeddings * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
    return embeddings.detach(), grads


def assert_equal_to_padded(encoder: SentenceEncoder, texts: list[str]) -> None:
    encoder.min_padding = 0.0  # unpadded whatever the padding, to compare the two paths
    padded, padded_grads = forward_and_grads(encoder, texts, unpad=False)
    unpadded, unpadded_grads = forward_and_grads(encoder, texts, unpad=True)
    assert encoder.unpadded(encoder.tokenize(texts)["attention_mask"])  # the unpadded path did run
    assert float((unpadded - padded).abs().max()) <= TOLERANCE
    assert set(unpadded_grads) == set(padded_grads) and len(padded_grads) > 10
    assert any(float(g.abs().max()) > 1e-4 for g in padded_grads.values())  # not a comparison of zeros
    for name, grad in padded_grads.items():
        torch.testing.assert_close(unpadded_grads[name], grad, rtol=0, atol=TOLERANCE, msg=name)


# ------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("normalize", [True, False])
def test_unpadded_embeddings_and_gradients_equal_the_padded_model(model_dir, pooling, normalize):
    encoder = SentenceEncoder.from_pretrained(model_dir, pooling=pooling, normalize=normalize).train()
    texts = varied_texts(12, seed=4)
    lengths = encoder.tokenize(texts)["attention_mask"].sum(dim=1)
    assert lengths.min() * 3 < lengths.max()  # ragged: most positions of the short rows are padding
    assert_equal_to_padded(encoder, texts)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_unpadded_xlm_roberta_equals_the_padded_model(model_dir, pooling):
    encoder = tiny_xlm_roberta(model_dir).train()
    encoder.pooling = pooling
    assert_equal_to_padded(encoder, varied_texts(9, seed=6))


def test_a_batch_of_one_and_equal_lengths(model_dir):
    encoder = SentenceEncoder.from_pretrained(model_dir).train()
    assert_equal_to_padded(encoder, ["hello world"])
    assert_equal_to_padded(encoder, ["the cat", "the dog", "a book"])  # no padding at all


def test_unpadded_is_the_default_and_encode_agrees(model_dir):
    encoder = SentenceEncoder.from_pretrained(model_dir)
    assert encoder.unpad
    texts = varied_texts(20, seed=8)
    unpadded = encoder.encode(texts, batch_size=7)
    encoder.unpad = False
    torch.testing.assert_close(unpadded, encoder.encode(texts, batch_size=7), rtol=0, atol=TOLERANCE)


def test_autocast_bf16_stays_close(model_dir):
    encoder = SentenceEncoder.from_pretrained(model_dir).eval()
    texts = varied_texts(8, seed=2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        unpadded = encoder(texts)
        encoder.unpad = False
        padded = encoder(texts)
    assert float((unpadded.float() - padded.float()).abs().max()) < 0.05


@pytest.mark.parametrize("encoding", ["plain", "bucketed", "cached"])
@pytest.mark.parametrize("case", [CASES[0], CASES[5]], ids=[CASES[0]["name"], CASES[5]["name"]])
def test_every_encoding_unpadded_gives_the_padded_plain_step(model_dir, encoding, case):
    encoder, batch = load_encoder(model_dir), global_batch()
    encoder.unpad = False
    expected = step(encoder, "plain", case, batch)
    encoder.unpad = True
    assert_same_step(step(encoder, encoding, case, batch), expected, f"{case['name']} {encoding}")


# ------------------------------------------------------------------------------------------ padding
def test_no_padding_reaches_the_dense_layers(model_dir):
    encoder = SentenceEncoder.from_pretrained(model_dir).train()
    texts = varied_texts(32, seed=3)
    encoder.unpad = False
    with count_dense_tokens(encoder.model) as padded:
        encoder(texts).sum().backward()
    encoder.unpad = True
    with count_dense_tokens(encoder.model) as unpadded:
        encoder(texts).sum().backward()
    real = int(encoder.tokenize(texts)["attention_mask"].sum())
    linears = 6 * encoder.model.config.num_hidden_layers  # q, k, v, attention output, MLP in and out
    assert unpadded.real == padded.real == real * linears
    assert unpadded.fraction == 1.0
    assert padded.fraction < 0.6  # what the padded model spends on padding on these lengths


def test_little_padding_runs_padded(model_dir):
    encoder = SentenceEncoder.from_pretrained(model_dir)
    same = encoder.tokenize(["the cat", "the dog"])["attention_mask"]  # no padding
    ragged = encoder.tokenize(["the cat", "the cat is on the house and the dog in the car"])["attention_mask"]
    assert not encoder.unpadded(same) and encoder.unpadded(ragged)
    encoder.min_padding = 0.0
    assert encoder.unpadded(same)
    encoder.unpad = False
    assert not encoder.unpadded(ragged)


def test_unpadding_round_trip_on_either_padding_side():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0]])
    unpadding = Unpadding.from_mask(mask)
    values = torch.arange(12.0).reshape(3, 4, 1)
    tokens = unpadding.unpad(values)
    assert tokens.flatten().tolist() == [0.0, 1.0, 2.0, 6.0, 7.0, 8.0]
    assert unpadding.lengths.tolist() == [3, 2, 1] and unpadding.first.tolist() == [0, 3, 5]
    assert unpadding.sequence.tolist() == [0, 0, 0, 1, 1, 2]
    torch.testing.assert_close(unpadding.pad(tokens), values * mask.unsqueeze(-1))


# ------------------------------------------------------------------------------------------ fallback
def test_an_unsupported_model_runs_padded_with_one_warning(model_dir, caplog):
    bert = SentenceEncoder.from_pretrained(model_dir)
    config = BertConfig(
        vocab_size=bert.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, is_decoder=True,
    )  # fmt: skip
    decoder = BertModel(config, add_pooling_layer=False)
    encoder = SentenceEncoder(decoder, bert.tokenizer, name="decoder").eval()
    assert "decoder" in unsupported_reason(encoder.model)
    assert unsupported_reason(torch.nn.Linear(2, 2)) is not None
    assert unsupported_reason(bert.model) is None
    texts = varied_texts(4, seed=1)
    with caplog.at_level(logging.WARNING, logger="imascl_ray.encoder"), torch.no_grad():
        first, second = encoder(texts), encoder(texts)
    assert sum("running padded" in record.message for record in caplog.records) == 1
    encoder.unpad = False
    with torch.no_grad():
        torch.testing.assert_close(first, encoder(texts), rtol=0, atol=0)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_the_config_switch_reaches_the_student(model_dir):
    from imascl_ray.config import load_config
    from imascl_ray.preparation import load_student

    assert load_config(None, []).model.unpad is True
    off = load_config(None, ["model.unpad=false"]).model
    assert load_student(off, str(model_dir)).unpad is False
    assert load_student(load_config(None, []).model, str(model_dir)).unpad is True
