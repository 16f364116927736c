"""The ``datasets`` loader, offline: datasets the tests write to disk, read through the real call path."""

from __future__ import annotations

import json

import datasets
import pytest

from imascl_ray.data import load_hub_corpus
from imascl_ray.errors import InputError

FLAT = {
    "lang1": ["en", "en", "ru"],
    "lang2": ["fr", "ja", "ko"],
    "text1": ["Open the file in a new window", "Close every open window", "Открыть файл в новом окне"],
    "text2": [
        "Ouvrir le fichier dans une nouvelle fenêtre",
        "開いているウィンドウをすべて閉じる",
        "새 창에서 파일 열기",
    ],
}


def test_save_to_disk_dataset_dict_with_configurable_columns(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(FLAT),
            "validation": datasets.Dataset.from_dict({k: v[:1] for k, v in FLAT.items()}),
        }
    ).save_to_disk(str(folder))
    corpus = load_hub_corpus(
        str(folder), src_column="text1", tgt_column="text2", src_lang_column="lang1", tgt_lang_column="lang2"
    )
    assert corpus.src == FLAT["text1"] and corpus.tgt == FLAT["text2"]
    assert corpus.pair_counts() == {"en-fr": 1, "en-ja": 1, "ru-ko": 1}
    assert set(corpus.provenance) == {f"hub:{folder}"}
    validation = load_hub_corpus(
        str(folder),
        split="validation",
        src_column="text1",
        tgt_column="text2",
        src_lang_column="lang1",
        tgt_lang_column="lang2",
        provenance="mine",
    )
    assert len(validation) == 1 and validation.provenance == ["mine"]
    with pytest.raises(
        InputError, match=r"dataset .*saved \[test\]: no split 'test' \(splits: train, validation\)"
    ):
        load_hub_corpus(str(folder), split="test")


def test_load_dataset_on_local_files_with_a_translation_column(tmp_path):
    folder = tmp_path / "opus_like"
    folder.mkdir()
    records = [
        {"id": str(i), "translation": {"en": f"English sentence number {i}", "fr": f"Phrase numéro {i}"}}
        for i in range(5)
    ]
    (folder / "train.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8"
    )
    corpus = load_hub_corpus(
        str(folder),
        name=None,
        translation_column="translation",
        src_lang="en",
        tgt_lang="fr",
        cache_dir=str(tmp_path / "cache"),
        limit=4,
    )
    assert corpus.src == [f"English sentence number {i}" for i in range(4)]
    assert corpus.tgt == [f"Phrase numéro {i}" for i in range(4)]
    assert corpus.pair_counts() == {"en-fr": 4}
    # the same files through an explicit builder + data_files, languages fixed, flat columns absent
    with pytest.raises(InputError, match=r"missing column\(s\) src, tgt \(columns: id, translation\)"):
        load_hub_corpus(
            "json",
            data_files=str(folder / "train.jsonl"),
            src_lang="en",
            tgt_lang="fr",
            cache_dir=str(tmp_path / "cache"),
        )


def test_flat_columns_with_fixed_languages_and_bad_rows(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"src": "Save the current document", "tgt": "Enregistrer le document actuel"},
        {"src": "  ", "tgt": "Vide"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cache = str(tmp_path / "cache")
    corpus = load_hub_corpus("json", data_files=str(path), src_lang="en", tgt_lang="fr", cache_dir=cache)
    assert len(corpus) == 1 and corpus.dropped == {"empty": 1}
    with pytest.raises(
        InputError, match=r"dataset json \[train\] row 2, field src: empty or whitespace-only"
    ):
        load_hub_corpus(
            "json", data_files=str(path), src_lang="en", tgt_lang="fr", cache_dir=cache, empty="error"
        )
    with pytest.raises(InputError, match=r"dataset json \[train\]: tgt_lang: unknown language code 'fra'"):
        load_hub_corpus("json", data_files=str(path), src_lang="en", tgt_lang="fra", cache_dir=cache)
