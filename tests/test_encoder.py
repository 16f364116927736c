"""SentenceEncoder on the tiny local model: pooling, prefix, dynamic padding, encode vs forward, saving."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imascl_ray.encoder import SentenceEncoder, weights_hash
from imascl_ray.errors import InputError
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus, tiny_vocabulary

TEXTS = [
    "Hello world, the cat is on the table.",
    "Bonjour le monde, le chat est là.",
    "今日は世界",
    "안녕하세요 세계",
    "Привет мир",
    "ok",
    "open the file and save it before you close the window, please",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def encoder(tiny_dir):
    return SentenceEncoder.from_pretrained(tiny_dir)


def reference_embeddings(encoder: SentenceEncoder, texts, pooling: str, normalize: bool) -> torch.Tensor:
    """One text at a time (no padding at all), pooled by hand from the raw Hugging Face model."""
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = encoder.tokenizer(encoder.prefix + text, return_tensors="pt")["input_ids"]
            hidden = encoder.model(input_ids=ids).last_hidden_state[0]
            row = hidden.mean(dim=0) if pooling == "mean" else hidden[0]
            rows.append(F.normalize(row, dim=0) if normalize else row)
    return torch.stack(rows)


def test_tiny_model_is_reproducible_and_covers_five_languages(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    encoder = SentenceEncoder.from_pretrained(tiny_dir)
    unk = encoder.tokenizer.unk_token_id
    for text in TEXTS:
        ids = encoder.tokenizer(text)["input_ids"]
        assert unk not in ids, (text, encoder.tokenizer.convert_ids_to_tokens(ids))
    assert len(set(tiny_vocabulary())) == len(tiny_vocabulary())


def test_synthetic_corpus_groups_are_reproducible_and_differ():
    corpus = synthetic_parallel_corpus(50, pair_names=("en-fr", "en-ru"))
    groups = corpus.groups()
    assert sorted(groups) == ["en-fr", "en-ru"] and all(len(src) == 50 for src, _ in groups.values())
    assert groups["en-fr"] == synthetic_parallel_corpus(50).groups()["en-fr"]
    assert groups["en-ru"] == synthetic_parallel_corpus(50, seed=1).groups()["en-fr"]
    assert groups["en-fr"] != groups["en-ru"]
    assert len(set(groups["en-fr"][0])) == 50  # unique sentences


@pytest.mark.parametrize(("pooling", "normalize"), [("mean", True), ("cls", False), ("mean", False)])
def test_batched_encode_matches_unpadded_reference(tiny_dir, pooling, normalize):
    encoder = SentenceEncoder.from_pretrained(tiny_dir, pooling=pooling, normalize=normalize)
    expected = reference_embeddings(encoder, TEXTS, pooling, normalize)
    got = encoder.encode(TEXTS, batch_size=3)
    assert got.dtype == torch.float32 and got.shape == (len(TEXTS), 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    norms = got.norm(dim=1)
    if normalize:
        torch.testing.assert_close(norms, torch.ones(len(TEXTS)))
    else:
        assert (norms - 1).abs().max() > 1e-2


def test_encode_keeps_input_order_whatever_the_batch_size(encoder):
    one_by_one = torch.cat([encoder.encode([text]) for text in TEXTS])
    for batch_size in (1, 2, 64):
        torch.testing.assert_close(
            encoder.encode(TEXTS, batch_size=batch_size), one_by_one, atol=1e-5, rtol=1e-5
        )
    assert encoder.encode([]).shape == (0, 32)


def test_dynamic_padding_pads_to_the_longest_text_of_the_batch(encoder):
    batch = encoder.tokenize(["ok", "hello world"])
    longest = len(encoder.tokenizer("hello world")["input_ids"])
    assert batch["input_ids"].shape == (2, longest) and longest < encoder.max_length
    assert batch["attention_mask"].sum().item() == longest + 3  # "[CLS] ok [SEP]" has 3 tokens


def test_max_length_truncates(tiny_dir):
    encoder = SentenceEncoder.from_pretrained(tiny_dir, max_length=8)
    batch = encoder.tokenize(["the " * 50])
    assert batch["input_ids"].shape == (1, 8)


def test_prefix_is_prepended_to_every_text(tiny_dir):
    plain = SentenceEncoder.from_pretrained(tiny_dir)
    prefixed = SentenceEncoder.from_pretrained(tiny_dir, prefix="query: ")
    assert prefixed.prefix == "query: "
    torch.testing.assert_close(prefixed.encode(TEXTS), plain.encode(["query: " + t for t in TEXTS]))
    assert (prefixed.encode(TEXTS) - plain.encode(TEXTS)).abs().max() > 1e-3


def test_forward_has_gradient_and_matches_encode_in_eval_mode(encoder):
    assert not encoder.training  # from_pretrained gives eval mode, like Hugging Face models
    embeddings = encoder(TEXTS)
    assert embeddings.requires_grad
    torch.testing.assert_close(embeddings.detach(), encoder.encode(TEXTS), atol=1e-5, rtol=1e-5)
    embeddings.sum().backward()
    layer = encoder.model.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0


def test_encode_runs_without_dropout_and_restores_training_mode(encoder):
    encoder.train()
    first = encoder.encode(TEXTS)
    assert encoder.training
    torch.testing.assert_close(encoder.encode(TEXTS), first)
    # In training mode the forward uses dropout, so it differs from the deterministic encode.
    assert (encoder(TEXTS).detach() - first).abs().max() > 1e-4


def test_freeze_word_embeddings_stops_their_gradient_only(encoder):
    frozen = encoder.freeze_word_embeddings()
    assert frozen == len(tiny_vocabulary()) * 32
    encoder(TEXTS).sum().backward()
    assert encoder.model.get_input_embeddings().weight.grad is None
    assert encoder.model.embeddings.position_embeddings.weight.grad is not None


def test_revision_is_a_content_hash_of_the_weights(tiny_dir, encoder):
    assert encoder.revision == SentenceEncoder.from_pretrained(tiny_dir).revision
    assert encoder.revision == weights_hash(encoder.model)
    before = encoder.revision
    with torch.no_grad():
        encoder.model.encoder.layer[1].output.dense.bias[0] += 1e-3
    assert encoder.revision != before


def test_bad_pooling_is_an_input_error(tiny_dir):
    with pytest.raises(InputError, match="pooling"):
        SentenceEncoder.from_pretrained(tiny_dir, pooling="max")


@pytest.mark.parametrize(("pooling", "normalize", "prefix"), [("mean", True, "query: "), ("cls", False, "")])
def test_saved_folder_loads_in_sentence_transformers_with_the_same_embeddings(
    tmp_path, tiny_dir, pooling, normalize, prefix
):
    from sentence_transformers import SentenceTransformer

    encoder = SentenceEncoder.from_pretrained(
        tiny_dir, pooling=pooling, normalize=normalize, prefix=prefix, max_length=64
    )
    saved = encoder.save(tmp_path / "st")
    assert (saved / "model.safetensors").is_file() and not list(saved.glob("*.bin"))
    expected = encoder.encode(TEXTS)

    st_model = SentenceTransformer(str(saved), device="cpu")
    assert st_model.max_seq_length == 64
    from_st = st_model.encode(TEXTS, convert_to_tensor=True).cpu()
    assert (from_st - expected).abs().max().item() < 1e-5

    reloaded = SentenceEncoder.from_pretrained(saved)
    assert (reloaded.pooling, reloaded.normalize, reloaded.prefix, reloaded.max_length) == (
        pooling,
        normalize,
        prefix,
        64,
    )
    assert reloaded.revision == encoder.revision
    assert (reloaded.encode(TEXTS) - expected).abs().max().item() < 1e-6
    # Settings given explicitly win over the recorded ones.
    override = SentenceEncoder.from_pretrained(saved, prefix="passage: ", pooling="mean")
    assert (override.prefix, override.pooling) == ("passage: ", "mean")
