"""The corpus table and its files: round trips, the shared interface, and every bad-input message."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imascl_ray.data import Corpus, read_corpus, write_corpus
from imascl_ray.errors import InputError

ROWS = [
    ("en", "fr", "The file could not be opened.", "Le fichier n’a pas pu être ouvert.", "coreutils"),
    ("en", "ja", "The file could not be opened.", "ファイルを開けませんでした。", "coreutils"),
    ("en", "fr", "Save the document before closing", "Enregistrer le document avant de fermer", "gtk"),
    ("fr", "ru", "Le fichier n’a pas pu être ouvert.", "Не удалось открыть файл.", "join"),
]


def sample() -> Corpus:
    return Corpus.from_pairs(ROWS)


def write_tsv(path, header, lines, encoding="utf-8"):
    path.write_bytes(("\t".join(header) + "\n" + "".join(line + "\n" for line in lines)).encode(encoding))
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_every_format_round_trips_rows_and_provenance(tmp_path, suffix):
    corpus = sample()
    path = write_corpus(corpus, tmp_path / f"sub/corpus{suffix}")
    again = read_corpus(path)
    assert again == corpus
    assert [tuple(pair.__dict__.values()) for pair in again] == ROWS


def test_groups_are_aligned_by_position():
    groups = sample().groups()
    assert list(groups) == ["en-fr", "en-ja", "fr-ru"]
    sources, targets = groups["en-fr"]
    expected = [(s, t) for sl, tl, s, t, _ in ROWS if (sl, tl) == ("en", "fr")]
    assert list(zip(sources, targets, strict=True)) == expected


def test_sentences_are_unique_sorted_and_indexed_per_row():
    corpus = sample()
    sentences = corpus.sentences()
    everything = {text for row in ROWS for text in row[2:4]}
    assert sentences == sorted(everything)
    src_ids, tgt_ids = corpus.sentence_ids()
    for row, (_, _, src, tgt, _) in enumerate(ROWS):
        assert sentences[src_ids[row]] == src
        assert sentences[tgt_ids[row]] == tgt
    per_group = corpus.group_sentence_ids()
    sources, targets = corpus.groups()["fr-ru"]
    assert [sentences[i] for i in per_group["fr-ru"][0]] == sources
    assert [sentences[i] for i in per_group["fr-ru"][1]] == targets


def test_sentence_list_and_fingerprint_depend_on_content_not_row_order():
    forward, backward = sample(), Corpus.from_pairs(reversed(ROWS))
    assert forward.sentences() == backward.sentences()
    assert forward.sentences_fingerprint() == backward.sentences_fingerprint()
    assert forward.fingerprint() != backward.fingerprint()
    changed = Corpus.from_pairs([*ROWS[:3], (*ROWS[3][:3], "Файл не открыт.", "join")])
    assert changed.sentences_fingerprint() != forward.sentences_fingerprint()


def test_tsv_columns_in_any_order_and_without_provenance(tmp_path):
    path = write_tsv(
        tmp_path / "c.tsv",
        ["tgt", "src", "src_lang", "tgt_lang"],
        ["Bonjour tout le monde\tHello everyone\tEN\tfr"],
    )
    corpus = read_corpus(path)
    assert corpus[0].src_lang == "en" and corpus[0].src == "Hello everyone"
    assert corpus[0].tgt == "Bonjour tout le monde" and corpus.provenance == [""]


# ---- bad input: each message names the file and the line (or row) and the field -------------------


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_missing_column_names_the_file_and_column(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".tsv":
        write_tsv(path, ["src_lang", "tgt_lang", "src"], ["en\tfr\tHello there my friend"])
        where = "line 1"
    elif suffix == ".jsonl":
        path.write_text(
            json.dumps({"src_lang": "en", "tgt_lang": "fr", "src": "Hi"}) + "\n", encoding="utf-8"
        )
        where = "line 1"
    else:
        pq.write_table(pa.table({"src_lang": ["en"], "tgt_lang": ["fr"], "src": ["Hi"]}), path)
        where = ""
    with pytest.raises(InputError, match=rf"{path}.*{where}.*missing (column|field)\(s\) tgt"):
        read_corpus(path)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_empty_sentences_are_dropped_with_a_count_or_raise(tmp_path, suffix, caplog):
    corpus = Corpus.from_pairs(
        [ROWS[0], ("en", "fr", "   ", "Vide"), ROWS[2], ("en", "ja", "Empty target", "")]
    )
    path = write_corpus(corpus, tmp_path / f"c{suffix}")
    with caplog.at_level(logging.WARNING):
        kept = read_corpus(path)
    assert len(kept) == 2 and kept.dropped == {"empty": 2}
    assert "dropped 2 pair(s)" in caplog.text
    place = "row 2" if suffix == ".parquet" else ("line 3" if suffix == ".tsv" else "line 2")
    with pytest.raises(InputError, match=rf"{path} {place}, field src: empty or whitespace-only"):
        read_corpus(path, empty="error")


def test_null_sentence_in_parquet_counts_as_empty(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(
        pa.table(
            {
                "src_lang": ["en", "en"],
                "tgt_lang": ["fr", "fr"],
                "src": ["One two three four", "Five six seven"],
                "tgt": ["Un deux trois", None],
            }
        ),
        path,
    )
    with pytest.raises(InputError, match=rf"{path} row 2, field tgt"):
        read_corpus(path, empty="error")


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_unknown_language_code_names_line_and_field(tmp_path, suffix):
    corpus = Corpus.from_pairs([ROWS[0], ("en", "jp", "Open the file", "ファイルを開く")])
    path = write_corpus(corpus, tmp_path / f"c{suffix}")
    place = "row 2" if suffix == ".parquet" else ("line 3" if suffix == ".tsv" else "line 2")
    with pytest.raises(InputError, match=rf"{path} {place}, field tgt_lang: unknown language code 'jp'"):
        read_corpus(path)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_non_utf8_bytes_name_the_line(tmp_path, suffix):
    path = write_corpus(sample(), tmp_path / f"c{suffix}")
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:20] + b"\xe9" + lines[2][20:]  # a Latin-1 byte on the file's third line
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        InputError, match=rf"{path} line 3: bytes that are not UTF-8 \(0xe9 at byte column 21"
    ):
        read_corpus(path)


def test_non_utf8_bytes_in_a_parquet_binary_column_name_row_and_field(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(
        pa.table(
            {
                "src_lang": ["en", "en"],
                "tgt_lang": ["fr", "fr"],
                "src": pa.array([b"Hello my dear friend", b"Caf\xe9 au lait please"], pa.binary()),
                "tgt": ["Bonjour mon cher ami", "Un café au lait"],
            }
        ),
        path,
    )
    with pytest.raises(InputError, match=rf"{path} row 2, field src: bytes that are not UTF-8"):
        read_corpus(path)


def test_tsv_line_with_the_wrong_number_of_fields(tmp_path):
    path = write_tsv(
        tmp_path / "c.tsv",
        ["src_lang", "tgt_lang", "src", "tgt"],
        [
            "en\tfr\tOne two three four\tUn deux trois quatre",
            "en\tfr\tA sentence with\ta tab inside\tUne phrase",
        ],
    )
    with pytest.raises(InputError, match=rf"{path} line 3: expected 4 tab-separated fields .* found 5"):
        read_corpus(path)


def test_jsonl_bad_json_and_non_string_fields(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"src_lang": "en", "tgt_lang": "fr", "src": "a", "tgt": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{path} line 2: not valid JSON"):
        read_corpus(path)
    path.write_text('{"src_lang": "en", "tgt_lang": "fr", "src": ["a"], "tgt": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"{path} line 1, field src: expected a string, found list"):
        read_corpus(path)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"c\.csv: unknown corpus format '\.csv'"):
        read_corpus(tmp_path / "c.csv")
    with pytest.raises(InputError, match=r"nope\.tsv: no such corpus file"):
        read_corpus(tmp_path / "nope.tsv")


def test_tsv_writer_refuses_a_tab_inside_a_sentence(tmp_path):
    corpus = Corpus.from_pairs([ROWS[0], ("en", "fr", "Name:\tvalue", "Nom :\tvaleur")])
    with pytest.raises(InputError, match=r"row 2, field src holds a tab or newline"):
        write_corpus(corpus, tmp_path / "c.tsv")
    assert read_corpus(write_corpus(corpus, tmp_path / "c.jsonl")) == corpus
    assert not (tmp_path / "c.tsv").exists()  # checked before anything is written


def test_a_repeated_tsv_column_names_the_file_line_1_and_the_column(tmp_path):
    """It used to be accepted, the last ``src`` column silently winning."""
    path = write_tsv(
        tmp_path / "c.tsv",
        ["src_lang", "tgt_lang", "src", "tgt", "src"],
        ["en\tfr\tOne two three four\tUn deux trois quatre\tFive six seven eight"],
    )
    with pytest.raises(InputError, match=rf"^{path} line 1: column\(s\) src repeated in the header"):
        read_corpus(path)


def test_a_repeated_jsonl_key_names_the_line_and_the_key(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"src_lang": "en", "tgt_lang": "fr", "src": "a", "tgt": "b"}\n'
        '{"src_lang": "en", "tgt_lang": "fr", "src": "a", "tgt": "b", "src": "c"}\n',
        encoding="utf-8",
    )
    with pytest.raises(InputError, match=rf"^{path} line 2: key 'src' repeated"):
        read_corpus(path)


class Killed(BaseException):
    """A kill in the middle of a write."""


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_a_write_killed_halfway_leaves_the_old_file_whole_and_no_temporary(tmp_path, suffix, monkeypatch):
    target = write_corpus(sample(), tmp_path / f"c{suffix}")
    before = target.read_bytes()
    real_open, real_write_table = Path.open, pq.write_table

    class DiesAfterTwoWrites:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, text):
            self.writes += 1
            if self.writes > 2:
                raise Killed
            return self.handle.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def half_a_parquet_file(table, where, **kwargs):
        real_write_table(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:100])
        raise Killed

    def opened(self, mode="r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return DiesAfterTwoWrites(handle) if "w" in mode else handle

    monkeypatch.setattr(Path, "open", opened)
    monkeypatch.setattr(pq, "write_table", half_a_parquet_file)
    with pytest.raises(Killed):
        write_corpus(Corpus.from_pairs(ROWS * 20), target)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == [target.name]
