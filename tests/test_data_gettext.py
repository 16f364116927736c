"""The gettext corpus: the .mo reader against Python's gettext, the filters, the join, the CLI, and the
real catalogues of this machine."""

from __future__ import annotations

import gettext
import os
import struct

import pytest

from imascl_ray.cli import main
from imascl_ray.data import read_corpus
from imascl_ray.data.gettext_corpus import (
    PLACEHOLDER,
    MessageFilter,
    build_gettext_corpus,
    cached_gettext_corpus,
    clean_mnemonics,
    read_mo,
)
from imascl_ray.errors import InputError

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path, messages: dict[str, str], order: str = "<") -> None:
    """A .mo file as the GNU format describes it: header, two tables of (length, offset), the strings."""
    entries = sorted({"": HEADER, **messages}.items())
    ids = [key.encode("utf-8") for key, _ in entries]
    strs = [value.encode("utf-8") for _, value in entries]
    count = len(entries)
    originals, translations = 28, 28 + 8 * count
    offset = translations + 8 * count
    table, blob = b"", b""
    for strings in (ids, strs):
        for text in strings:
            table += struct.pack(f"{order}2I", len(text), offset + len(blob))
            blob += text + b"\0"
    header = struct.pack(f"{order}7I", 0x950412DE, 0, count, originals, translations, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + table + blob)


MESSAGES = {
    "Open the selected file in a new window": "Ouvrir le fichier sélectionné dans une nouvelle fenêtre",
    "menu\x04Close all the open documents": "Fermer tous les documents ouverts",
    "One file was deleted from disk\x00Many files were deleted from disk": (
        "Un fichier a été supprimé du disque\x00Des fichiers ont été supprimés du disque"
    ),
    "Untranslated entry stays out": "",
}


def test_read_mo_agrees_with_python_gettext(tmp_path):
    path = tmp_path / "demo.mo"
    write_mo(path, MESSAGES)
    ours = dict(read_mo(path))
    with path.open("rb") as handle:
        reference = gettext.GNUTranslations(handle)
    english = "Open the selected file in a new window"
    assert ours[english] == reference.gettext(english)
    assert ours["Close all the open documents"] == reference.pgettext("menu", "Close all the open documents")
    singular, plural = "One file was deleted from disk", "Many files were deleted from disk"
    assert ours[singular] == reference.ngettext(singular, plural, 1)
    assert "Untranslated entry stays out" not in ours and "" not in ours
    assert len(ours) == 3


def test_read_mo_big_endian_and_bad_files(tmp_path):
    path = tmp_path / "big.mo"
    write_mo(path, {"Hello there my friend": "Bonjour mon ami"}, order=">")
    assert read_mo(path) == [("Hello there my friend", "Bonjour mon ami")]
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"this is not a catalogue at all")
    with pytest.raises(InputError, match=rf"{bad}: not a .mo catalogue"):
        read_mo(bad)
    truncated = tmp_path / "truncated.mo"
    truncated.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match=rf"{truncated}: corrupt .mo catalogue"):
        read_mo(truncated)


@pytest.mark.parametrize(
    "text",
    [
        "%s files",
        "%d",
        "%-10.3f",
        "%1$s and %2$s",
        "%(name)s",
        "%%",
        "{0}",
        "{name}",
        "{}",
        "$HOME",
        "${PATH}",
        "<b>bold</b>",
        "%<PRId64>",
        "%1 of %2",
    ],
)
def test_placeholders_are_found(text):
    assert PLACEHOLDER.search(f"Some words around {text} here")


@pytest.mark.parametrize(
    "text",
    [
        "Open the file in a new window",
        "Save the document (a copy)",
        "Enter a value, then press Enter",
        "Use 5 threads at most",
    ],
)
def test_plain_sentences_have_no_placeholder(text):
    assert not PLACEHOLDER.search(text)


def test_mnemonics_and_filter_rules():
    assert clean_mnemonics("_Open the recent file") == "Open the recent file"
    assert clean_mnemonics("Save _As another file") == "Save As another file"
    assert clean_mnemonics("ファイルを開く(_O)") == "ファイルを開く"
    assert clean_mnemonics("&File and folder options") == "File and folder options"
    assert clean_mnemonics("snake_case stays intact") == "snake_case stays intact"
    rule = MessageFilter()
    assert rule.reject_reason("Open the file now", "Ouvrir le fichier maintenant") is None
    assert rule.reject_reason("Open the file", "Ouvrir le fichier") == "too few words"
    assert rule.reject_reason("Open the file\nnow", "Ouvrir\nle fichier") == "newline"
    assert rule.reject_reason("Open the file %s now", "Ouvrir le fichier %s") == "placeholder"
    assert rule.reject_reason("Open " + "the file " * 60, "Ouvrir") == "too long"
    assert rule.reject_reason("Linux kernel version four", "Linux Kernel version four") == "untranslated"
    assert MessageFilter(min_words=2).reject_reason("Open the file", "Ouvrir le fichier") is None
    assert MessageFilter(allow_placeholders=True).reject_reason("Open the file %s now", "Ouvrir %s") is None


@pytest.fixture
def locale_tree(tmp_path):
    """fr and ja catalogues in two domains; one English message translated twice in French."""
    root = tmp_path / "locale"
    chosen = "Ouvrir le fichier sélectionné dans une nouvelle fenêtre"
    write_mo(
        root / "fr/LC_MESSAGES/alpha.mo",
        {
            "Open the selected file in a new window": chosen,
            "Close all the open documents now": "Fermer tous les documents ouverts maintenant",
            "Delete %s from the disk": "Supprimer %s du disque",
            "Too short": "Trop court",
        },
    )
    write_mo(
        root / "fr/LC_MESSAGES/beta.mo",
        {
            "Open the selected file in a new window": "Ouvrir le fichier choisi dans une nouvelle fenêtre",
            "Close all the open documents now": "Fermer tous les documents ouverts maintenant",  # duplicate
        },
    )
    write_mo(
        root / "ja/LC_MESSAGES/alpha.mo",
        {
            "Open the selected file in a new window": "選択したファイルを新しいウィンドウで開く(_O)",
            "Quit the application right away": "アプリケーションをすぐに終了する",
        },
    )
    return root


def test_build_pairs_joins_on_english_and_deduplicates(locale_tree):
    corpus, report = build_gettext_corpus(
        "en,fr,ja", "all", roots=[locale_tree], system=False, python_packages=False, progress=False
    )
    rows = {(p.language_pair, p.src, p.tgt, p.provenance) for p in corpus}
    assert rows == {
        (
            "en-fr",
            "Open the selected file in a new window",
            "Ouvrir le fichier sélectionné dans une nouvelle fenêtre",
            "gettext:alpha",
        ),
        (
            "en-fr",
            "Open the selected file in a new window",
            "Ouvrir le fichier choisi dans une nouvelle fenêtre",
            "gettext:beta",
        ),
        (
            "en-fr",
            "Close all the open documents now",
            "Fermer tous les documents ouverts maintenant",
            "gettext:alpha,beta",
        ),
        (
            "en-ja",
            "Open the selected file in a new window",
            "選択したファイルを新しいウィンドウで開く",
            "gettext:alpha",
        ),
        ("en-ja", "Quit the application right away", "アプリケーションをすぐに終了する", "gettext:alpha"),
        (
            "fr-ja",
            "Ouvrir le fichier sélectionné dans une nouvelle fenêtre",
            "選択したファイルを新しいウィンドウで開く",
            "gettext:alpha",
        ),
        (
            "fr-ja",
            "Ouvrir le fichier choisi dans une nouvelle fenêtre",
            "選択したファイルを新しいウィンドウで開く",
            "gettext:alpha,beta",
        ),
    }
    assert report.pairs == {"en-fr": 3, "en-ja": 2, "fr-ja": 2}
    assert report.catalogues == 3 and report.rejected == {"placeholder": 1, "too few words": 1}
    only_english = build_gettext_corpus(
        "en,fr,ja", "en-xx", roots=[locale_tree], system=False, python_packages=False, progress=False
    )[0]
    assert only_english.pair_counts() == {"en-fr": 3, "en-ja": 2}


def test_the_cached_corpus_is_rebuilt_when_a_catalogue_changes(locale_tree, tmp_path):
    """The cache was keyed by the languages alone: an upgraded catalogue kept serving the old corpus."""
    cache = tmp_path / "cache"
    options = {"roots": [locale_tree], "system": False, "python_packages": False}
    first = cached_gettext_corpus("en,fr,ja", cache, **options)
    assert first.pair_counts() == {"en-fr": 3, "en-ja": 2, "fr-ja": 2}
    (cached,) = cache.iterdir()  # one whole file, no temporary left
    assert cached_gettext_corpus("en,fr,ja", cache, **options) == first
    assert list(cache.iterdir()) == [cached]  # reused

    japanese = locale_tree / "ja/LC_MESSAGES/alpha.mo"
    write_mo(
        japanese,
        {
            "Open the selected file in a new window": "選択したファイルを新しいウィンドウで開く(_O)",
            "Quit the application right away": "アプリケーションをすぐに終了する",
            "Close all the open documents now": "開いている文書をすべて今すぐ閉じる",
        },
    )
    upgraded = cached_gettext_corpus("en,fr,ja", cache, **options)
    assert upgraded.pair_counts() == {"en-fr": 3, "en-ja": 3, "fr-ja": 3}
    assert len(list(cache.iterdir())) == 2

    stat = japanese.stat()
    os.utime(japanese, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, touched: rebuilt
    assert cached_gettext_corpus("en,fr,ja", cache, **options) == upgraded
    assert len(list(cache.iterdir())) == 3


def test_cli_writes_the_corpus_and_prints_counts(locale_tree, tmp_path, capsys):
    out = tmp_path / "out" / "loc.tsv"
    code = main(
        [
            "corpus",
            "gettext",
            "--langs",
            "en,fr,ja",
            "--out",
            str(out),
            "--root",
            str(locale_tree),
            "--no-system",
            "--no-python-packages",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "en-fr\t3" in printed and "fr-ja\t2" in printed and f"wrote 7 pairs to {out}" in printed
    assert read_corpus(out).pair_counts() == {"en-fr": 3, "en-ja": 2, "fr-ja": 2}
    assert main(["corpus", "stats", str(out)]) == 0
    assert "unique sentences: 8" in capsys.readouterr().out


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    code = main(["corpus", "gettext", "--langs", "en,jp", "--out", str(tmp_path / "x.parquet"), "--quiet"])
    assert code == 2
    assert "langs: unknown language code 'jp'" in capsys.readouterr().err
    assert main(["corpus", "gettext", "--out", str(tmp_path / "x.csv"), "--quiet"]) == 2
    assert "unknown corpus format '.csv'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def real_corpus():
    """The corpus from this machine's real catalogues (CI machines have the same ones)."""
    return build_gettext_corpus("en,fr,ja,ko,ru", "all", progress=False)


def test_real_catalogues_give_thousands_of_pairs_per_english_pair(real_corpus):
    corpus, report = real_corpus
    counts = corpus.pair_counts()
    for pair in ("en-fr", "en-ja", "en-ko", "en-ru"):
        assert counts[pair] >= 5000, (pair, counts)
    non_english = {name: count for name, count in counts.items() if "en" not in name.split("-")}
    assert len(non_english) == 6 and all(count > 0 for count in non_english.values())
    assert report.pairs == counts


def test_real_corpus_obeys_the_filters(real_corpus):
    corpus, _ = real_corpus
    english = [p.src for p in corpus if p.src_lang == "en"]
    assert all(len(text.split()) >= 4 for text in english)
    for text in [*corpus.src, *corpus.tgt]:
        assert "\n" not in text and len(text) <= 300 and not PLACEHOLDER.search(text)
    keys = list(zip(corpus.src_lang, corpus.tgt_lang, corpus.src, corpus.tgt, strict=True))
    assert len(set(keys)) == len(keys)
    assert all(p.startswith("gettext:") for p in corpus.provenance)


def test_python_package_locale_folders_are_searched(tmp_path, monkeypatch):
    from imascl_ray.data import gettext_corpus

    packages = tmp_path / "site-packages"
    write_mo(
        packages / "somepkg/conf/locale/fr/LC_MESSAGES/somepkg.mo",
        {"Enter a valid email address please": "Saisissez une adresse électronique valide"},
    )
    monkeypatch.setattr(gettext_corpus.site, "getsitepackages", lambda: [str(packages)])
    monkeypatch.setattr(gettext_corpus.sysconfig, "get_paths", lambda: {"purelib": str(packages)})
    assert gettext_corpus.python_locale_roots() == [packages / "somepkg/conf/locale"]
    corpus, _ = build_gettext_corpus("en,fr", "en-xx", system=False, progress=False)
    assert [(p.src, p.tgt, p.provenance) for p in corpus] == [
        ("Enter a valid email address please", "Saisissez une adresse électronique valide", "gettext:somepkg")
    ]
