"""Vocabulary trimming on the tiny WordPiece model and the ``model trim`` command."""

from __future__ import annotations

import json

import pytest
import torch

from imascl_ray.cli import main
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.testing import build_tiny_model
from imascl_ray.vocab import trim_vocabulary, trimmed_tokenizer_definition

CORPUS = [
    "open the file and save it",
    "ouvrir le fichier et enregistrer",
    "今日は世界",
    "안녕하세요 세계",
    "привет мир",
    "the cat is on the table",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_trimmed_model_gives_the_same_embeddings_on_its_corpus(tiny_dir, tmp_path):
    encoder = SentenceEncoder.from_pretrained(tiny_dir, prefix="query: ")
    full = encoder.encode(CORPUS)
    full_ids = [encoder.tokenizer(encoder.prefix + t)["input_ids"] for t in CORPUS]
    old_table = encoder.model.get_input_embeddings().weight.detach().clone()

    result = trim_vocabulary(encoder, CORPUS)
    assert result.new_vocab_size < result.old_vocab_size / 5
    assert encoder.model.get_input_embeddings().weight.shape == (result.new_vocab_size, 32)
    assert encoder.model.config.vocab_size == result.new_vocab_size
    # Every row kept is the old row of the same piece.
    torch.testing.assert_close(encoder.model.get_input_embeddings().weight, old_table[result.kept_ids])
    for text, before in zip(CORPUS, full_ids, strict=True):
        after = encoder.tokenizer(encoder.prefix + text)["input_ids"]
        assert [int(result.kept_ids[i]) for i in after] == before
    torch.testing.assert_close(encoder.encode(CORPUS), full, atol=1e-6, rtol=1e-6)
    # The special tokens survive and the tokenizer knows their new ids.
    tokens = encoder.tokenizer.convert_ids_to_tokens(encoder.tokenizer("the")["input_ids"])
    assert tokens == ["[CLS]", "the", "[SEP]"]
    assert encoder.tokenizer.pad_token_id == encoder.model.config.pad_token_id == 0

    # Saved and reloaded (project and sentence-transformers), the trimmed model still agrees.
    saved = encoder.save(tmp_path / "trimmed")
    reloaded = SentenceEncoder.from_pretrained(saved)
    torch.testing.assert_close(reloaded.encode(CORPUS), full, atol=1e-6, rtol=1e-6)


def test_trimming_a_unigram_definition_renumbers_pieces_specials_and_template():
    definition = {
        "added_tokens": [
            {"id": 0, "content": "<s>"},
            {"id": 3, "content": "<unk>"},
            {"id": 7, "content": "</s>"},
        ],
        "post_processor": {
            "type": "TemplateProcessing",
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [7], "tokens": ["</s>"]},
            },
        },
        "model": {
            "type": "Unigram",
            "unk_id": 3,
            "vocab": [
                ["<s>", 0.0],
                ["a", -1.0],
                ["b", -2.0],
                ["<unk>", 0.0],
                ["c", -3.0],
                ["d", -4.0],
                ["e", -5.0],
                ["</s>", 0.0],
            ],
        },
    }
    trimmed = trimmed_tokenizer_definition(definition, [0, 2, 3, 5, 7])
    expected = [["<s>", 0.0], ["b", -2.0], ["<unk>", 0.0], ["d", -4.0], ["</s>", 0.0]]
    assert trimmed["model"]["vocab"] == expected
    assert trimmed["model"]["unk_id"] == 2
    assert [t["id"] for t in trimmed["added_tokens"]] == [0, 2, 4]
    assert trimmed["post_processor"]["special_tokens"]["</s>"]["ids"] == [4]
    assert definition["model"]["unk_id"] == 3  # the input is not modified


def test_model_trim_command(tiny_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    out = tmp_path / "trimmed"
    assert main(["model", "trim", str(tiny_dir), "--texts", str(texts), "--out", str(out)]) == 0
    assert "pieces kept" in capsys.readouterr().out
    vocab = json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]
    trimmed = SentenceEncoder.from_pretrained(out)
    assert len(vocab) == trimmed.model.get_input_embeddings().weight.shape[0]
    full = SentenceEncoder.from_pretrained(tiny_dir)
    torch.testing.assert_close(trimmed.encode(CORPUS), full.encode(CORPUS), atol=1e-6, rtol=1e-6)


def test_model_trim_command_reports_a_missing_file(tiny_dir, tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert main(["model", "trim", str(tiny_dir), "--texts", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "nope.txt" in capsys.readouterr().err
