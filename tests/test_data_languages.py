"""Language codes, the paper's pair sets, and language priority / anchor sides."""

from __future__ import annotations

from itertools import combinations

import pytest

from imascl_ray.data.languages import (
    anchor_side,
    check_language,
    parse_languages,
    resolve_pair_set,
    resolve_priority,
    split_pair,
)
from imascl_ray.errors import InputError

FIVE = ["en", "fr", "ja", "ko", "ru"]


def test_pair_sets_of_the_paper():
    assert resolve_pair_set("en-xx", FIVE) == [("en", "fr"), ("en", "ja"), ("en", "ko"), ("en", "ru")]
    every = resolve_pair_set("all", FIVE)
    assert len(every) == 10 and {frozenset(p) for p in every} == {frozenset(p) for p in combinations(FIVE, 2)}
    union = resolve_pair_set("en-xx+fr-xx", FIVE)
    assert set(union) == {
        ("en", "fr"),
        ("en", "ja"),
        ("en", "ko"),
        ("en", "ru"),
        ("fr", "ja"),
        ("fr", "ko"),
        ("fr", "ru"),
    }  # en-fr once, not fr-en too
    assert ("ru", "ja") in resolve_pair_set("en-xx+ru-xx", FIVE)
    assert resolve_pair_set("en-fr,en-ja", FIVE) == [("en", "fr"), ("en", "ja")]
    assert resolve_pair_set("en-ko", FIVE) == [("en", "ko")]  # the cross-lingual setting


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("en-jp", "unknown language code 'jp'"),
        ("de-xx", "'de' is not among the chosen languages"),
        ("en-en", "pairs a language with itself"),
        ("enfr", "not a language pair like 'en-fr'"),
        ("", "empty language-pair set"),
    ],
)
def test_bad_pair_sets_say_what_is_wrong(spec, message):
    with pytest.raises(InputError, match=message):
        resolve_pair_set(spec, FIVE)


def test_language_codes():
    assert check_language(" FR ", "x") == "fr"
    with pytest.raises(InputError, match=r"corpus.tsv line 4, field src_lang: unknown language code 'eng'"):
        check_language("eng", "corpus.tsv line 4, field src_lang")
    assert parse_languages("en, fr,en,ja") == ["en", "fr", "ja"]
    assert split_pair("ja-ko") == ("ja", "ko")


def test_priority_auto_is_by_volume_and_explicit_order_is_kept():
    src = ["en"] * 5 + ["ru"] * 2 + ["fr"]
    tgt = ["ru"] * 3 + ["ja"] * 3 + ["ko", "ko"]
    # counts: en 5, ru 5, ja 3, ko 2, fr 1 -> ties by code
    assert resolve_priority("auto", src, tgt) == ["en", "ru", "ja", "ko", "fr"]
    assert resolve_priority(None, src, tgt) == ["en", "ru", "ja", "ko", "fr"]
    assert resolve_priority("ko,fr", src, tgt) == ["ko", "fr", "en", "ru", "ja"]


def test_anchor_is_the_higher_priority_side():
    paper = ["en", "ru", "ja", "fr", "ko"]
    assert anchor_side("en", "fr", paper) == "src"
    assert anchor_side("fr", "en", paper) == "tgt"
    assert anchor_side("fr", "ja", paper) == "tgt"  # ja outranks fr in the paper's order
    assert anchor_side("de", "ko", paper) == "tgt"  # an unlisted language ranks last
