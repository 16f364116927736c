"""Choosing pairs, capping, the train/validation split and the contamination filter."""

from __future__ import annotations

import pytest

from imascl_ray.data import (
    Corpus,
    cap_per_pair,
    contamination_filter,
    normalise_text,
    select_pairs,
    split_for_run,
    train_validation_split,
    write_corpus,
)
from imascl_ray.data.split import read_evaluation_sentences
from imascl_ray.errors import InputError


def synthetic(counts: dict[str, int]) -> Corpus:
    rows = []
    for name, count in counts.items():
        src_lang, tgt_lang = name.split("-")
        rows += [
            (src_lang, tgt_lang, f"{src_lang} sentence {i} of {name}", f"{tgt_lang} phrase {i} of {name}")
            for i in range(count)
        ]
    return Corpus.from_pairs(rows)


def test_normalise_text_folds_case_width_and_whitespace():
    assert normalise_text("  Hello\u3000 WORLD\n") == "hello world"
    assert normalise_text("ｆｕｌｌ ｗｉｄｔｈ") == "full width"  # NFKC
    assert normalise_text("Straße") == normalise_text("STRASSE")  # case folding, not lower()


def test_select_pairs_matches_either_orientation_and_names_missing_pairs():
    corpus = synthetic({"en-fr": 3, "ja-en": 2, "fr-ja": 1})
    chosen = select_pairs(corpus, "en-xx", ["en", "fr", "ja"])
    assert chosen.pair_counts() == {"en-fr": 3, "ja-en": 2}
    assert select_pairs(corpus, "all", ["en", "fr", "ja"]).pair_counts() == corpus.pair_counts()
    with pytest.raises(
        InputError, match=r"pairs 'en-xx': the corpus has no en-ko pairs \(it has: en-fr, fr-ja, ja-en\)"
    ):
        select_pairs(corpus, "en-xx", ["en", "fr", "ja", "ko"])


def test_cap_is_per_pair_seeded_and_independent_of_other_pairs():
    corpus = synthetic({"en-fr": 50, "en-ja": 8})
    capped = cap_per_pair(corpus, 10, seed=3)
    assert capped.pair_counts() == {"en-fr": 10, "en-ja": 8}
    assert cap_per_pair(corpus, 10, seed=3) == capped
    assert cap_per_pair(corpus, 10, seed=4) != capped
    alone = cap_per_pair(synthetic({"en-fr": 50}), 10, seed=3)
    assert alone.groups()["en-fr"] == capped.groups()["en-fr"]  # adding en-ja changed nothing for en-fr


def test_split_counts_determinism_and_disjointness():
    corpus = synthetic({"en-fr": 25, "en-ja": 25})
    split = train_validation_split(corpus, 5, seed=1)
    assert split.validation.pair_counts() == {"en-fr": 5, "en-ja": 5}
    assert split.train.pair_counts() == {"en-fr": 20, "en-ja": 20}
    assert set(split.train.src).isdisjoint(split.validation.src)
    assert sorted(split.train.src + split.validation.src) == sorted(corpus.src)
    assert train_validation_split(corpus, 5, seed=1).validation == split.validation
    assert train_validation_split(corpus, 5, seed=2).validation != split.validation
    assert train_validation_split(corpus, 0.2, seed=1).validation == split.validation


def test_split_drops_training_rows_sharing_a_sentence_with_validation():
    rows = [("en", "fr", f"English sentence {i}", f"Phrase {i}") for i in range(10)]
    rows += [("en", "ja", f"English sentence {i}", f"文 {i}") for i in range(10)]  # the same English
    corpus = Corpus.from_pairs(rows)
    split = train_validation_split(corpus, 3, seed=0)
    held_out = {normalise_text(t) for t in split.validation.src + split.validation.tgt}
    assert all(
        normalise_text(s) not in held_out and normalise_text(t) not in held_out
        for s, t in zip(split.train.src, split.train.tgt, strict=True)
    )
    assert len(split.train) + split.overlap_dropped == 20 - 6
    kept = train_validation_split(corpus, 3, seed=0, disjoint=False)
    assert len(kept.train) == 14 and kept.overlap_dropped == 0


def test_validation_larger_than_the_data_is_an_error_naming_the_pair():
    corpus = synthetic({"en-fr": 25, "en-ko": 4})
    with pytest.raises(
        InputError, match=r"validation: 5 validation pairs requested for en-ko, which has only 4"
    ):
        train_validation_split(corpus, 5, seed=0)
    with pytest.raises(InputError, match=r"validation: a fraction must lie between 0 and 1"):
        train_validation_split(corpus, 1.5, seed=0)


def test_contamination_filter_uses_normalised_text_and_reports_counts():
    corpus = Corpus.from_pairs(
        [
            ("en", "fr", "Open the file now", "Ouvrez le fichier maintenant"),
            ("en", "fr", "Close the window", "Fermez la fenêtre"),
            ("en", "ja", "Save your work often", "作業をこまめに保存してください"),
            ("en", "ja", "Quit the program", "プログラムを終了します"),
        ]
    )
    evaluation = {
        "tatoeba": ["  open THE  file now "],
        "flores": ["作業をこまめに保存してください", "unrelated"],
    }
    kept, report = contamination_filter(corpus, evaluation)
    assert kept.src == ["Close the window", "Quit the program"]
    assert report.dropped == 2
    assert report.by_pair == {"en-fr": 1, "en-ja": 1}
    assert report.by_set == {"flores": 1, "tatoeba": 1}
    assert "dropped 2 training pair(s)" in report.summary()
    untouched, nothing = contamination_filter(corpus, ["nothing in common"])
    assert untouched == corpus and nothing.dropped == 0


def test_evaluation_sentences_from_corpus_and_text_files(tmp_path):
    corpus = synthetic({"en-fr": 2})
    assert read_evaluation_sentences(write_corpus(corpus, tmp_path / "e.jsonl")) == corpus.src + corpus.tgt
    text = tmp_path / "e.txt"
    text.write_bytes(b"first line\n\nsecond line\n")
    assert read_evaluation_sentences(text) == ["first line", "second line"]
    text.write_bytes(b"ok\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"e\.txt line 2: bytes that are not UTF-8"):
        read_evaluation_sentences(text)


def test_prepare_command_selects_caps_splits_and_decontaminates(tmp_path, capsys):
    from imascl_ray.cli import main
    from imascl_ray.data import read_corpus

    source = write_corpus(synthetic({"en-fr": 30, "en-ja": 30, "fr-ja": 30}), tmp_path / "all.parquet")
    evaluation = tmp_path / "eval.txt"
    evaluation.write_text("EN sentence 0 of en-fr\nnot in the corpus\n", encoding="utf-8")
    train_path, validation_path = tmp_path / "train.jsonl", tmp_path / "validation.tsv"
    code = main(
        [
            "corpus",
            "prepare",
            str(source),
            "--pairs",
            "en-xx",
            "--langs",
            "en,fr,ja",
            "--cap",
            "20",
            "--validation",
            "5",
            "--seed",
            "3",
            "--evaluation",
            str(evaluation),
            "--train-out",
            str(train_path),
            "--validation-out",
            str(validation_path),
        ]
    )
    assert code == 0
    train, validation = read_corpus(train_path), read_corpus(validation_path)
    assert validation.pair_counts() == {"en-fr": 5, "en-ja": 5}
    expected_train = train_validation_split(
        cap_per_pair(select_pairs(read_corpus(source), "en-xx", ["en", "fr", "ja"]), 20, 3), 5, 3
    ).train
    expected_train, report = contamination_filter(expected_train, ["EN sentence 0 of en-fr"])
    assert train == expected_train
    assert report.summary() in capsys.readouterr().out
    code = main(
        [
            "corpus",
            "prepare",
            str(source),
            "--pairs",
            "en-fr",
            "--validation",
            "40",
            "--train-out",
            str(train_path),
            "--validation-out",
            str(validation_path),
        ]
    )
    assert code == 2
    assert "validation: 40 validation pairs requested for en-fr, which has only 30" in capsys.readouterr().err


def test_prepare_command_keeps_every_pair_of_the_corpus_by_default(tmp_path):
    """An en-xx corpus (no fr-ja rows) prepares without naming a pair set."""
    from imascl_ray.cli import main
    from imascl_ray.data import read_corpus

    source = write_corpus(synthetic({"en-fr": 12, "en-ja": 12}), tmp_path / "en-xx.parquet")
    train_path, validation_path = tmp_path / "train.parquet", tmp_path / "validation.tsv"
    arguments = ["corpus", "prepare", str(source), "--validation", "4"]
    assert main([*arguments, "--train-out", str(train_path), "--validation-out", str(validation_path)]) == 0
    assert read_corpus(validation_path).pair_counts() == {"en-fr": 4, "en-ja": 4}
    assert read_corpus(train_path).pair_counts() == {"en-fr": 8, "en-ja": 8}


def shared_english(count: int) -> Corpus:
    """en-fr, en-ja and en-ru rows whose English sides are the same sentences (as gettext catalogues are)."""
    english = [f"English sentence {i}" for i in range(count)]
    return Corpus.from_groups(
        {
            "en-fr": (english, [f"phrase {i}" for i in range(count)]),
            "en-ja": (english, [f"文 {i}" for i in range(count)]),
            "en-ru": (english, [f"фраза {i}" for i in range(count)]),
        }
    )


def held_out_texts(split) -> set[str]:
    parts = [split.validation] + ([split.test] if split.test is not None else [])
    return {normalise_text(text) for part in parts for text in [*part.src, *part.tgt]}


def test_a_pairs_held_out_rows_are_the_same_whatever_else_is_trained_or_scored():
    corpus = shared_english(40)
    alone = split_for_run(corpus, ["en-fr"], ["en-fr"], validation=5, test=3, seed=1)
    union = split_for_run(
        corpus, ["en-fr", "en-ja"], ["en-fr", "en-ja", "en-ru"], validation=5, test=3, seed=1
    )
    assert union.validation_pairs == ["en-fr", "en-ja", "en-ru"] and alone.validation_pairs == ["en-fr"]
    assert union.validation.pair_counts() == {"en-fr": 5, "en-ja": 5, "en-ru": 5}
    assert union.validation.groups()["en-fr"] == alone.validation.groups()["en-fr"]
    assert union.test.groups()["en-fr"] == alone.test.groups()["en-fr"]
    assert set(union.test.pair_counts()) == {"en-fr", "en-ja"}  # the test of what it trains
    for name, (sources, _) in union.validation.groups().items():  # within a pair, disjoint
        assert set(sources).isdisjoint(union.test.groups().get(name, ([], []))[0])
    # Training never shares a sentence with any held-out row of any trained or scored pair.
    trained = {normalise_text(t) for t in [*union.train.src, *union.train.tgt]}
    assert trained.isdisjoint(held_out_texts(union))
    assert set(union.train.pair_counts()) == {"en-fr", "en-ja"}
    assert union.overlap_dropped > 0  # the English of en-ja's and en-ru's held-out rows


def test_split_for_run_without_a_test_split_is_the_train_validation_split():
    corpus = shared_english(30)
    run = split_for_run(corpus, ["en-fr", "en-ja"], ["en-fr", "en-ja"], validation=4, test=0, seed=2)
    plain = train_validation_split(select_pairs(corpus, "en-fr,en-ja"), 4, seed=2)
    assert run.test is None
    assert run.train == plain.train and run.validation == plain.validation
