"""Reading and writing corpus files: TSV, JSONL and Parquet, chosen by extension.

The format is four columns ``src_lang, tgt_lang, src, tgt`` and an optional ``provenance`` column.
TSV has a header line naming the columns (any order, extra columns ignored) and one pair a line, no
quoting (a sentence holds no tab or newline). JSONL has one object a line with those keys.

Every problem a user can cause raises :class:`~imascl_ray.errors.InputError` naming the file and the
line (Parquet: the row) and field: a missing or repeated column (a repeated JSON key), a line with the
wrong number of fields, bytes that are not UTF-8, an unknown language code, an empty or whitespace-only
sentence (``empty="error"``; by default such rows are dropped and counted in ``Corpus.dropped["empty"]``),
a file without any pair.
Files are written whole or not at all (a temporary file in the same folder, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from imascl_ray.data.corpus import COLUMNS, PROVENANCE, Corpus
from imascl_ray.data.languages import check_language
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
EMPTY_POLICIES = ("drop", "error")
Row = tuple[int, dict[str, object]]  # (line or row number, record)


def corpus_format(path: str | Path) -> str:
    """``"tsv"``, ``"jsonl"`` or ``"parquet"`` from the file name, else an error naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path}: unknown corpus format {suffix!r}; expected one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def read_corpus(path: str | Path, *, empty: str = "drop") -> Corpus:
    """Read a corpus file (TSV, JSONL or Parquet, by extension).

    Args:
        path: the file.
        empty: what to do with an empty or whitespace-only sentence: ``"drop"`` the row (counted in
            ``corpus.dropped["empty"]`` and logged) or raise an ``"error"`` naming the line.

    A file with no pair (a header only, no rows, or only rows dropped for an empty sentence) is an
    error naming it: nothing trains, prepares or evaluates on it, so it is a mistake wherever it is read.
    """
    path = Path(path)
    kind = corpus_format(path)
    if empty not in EMPTY_POLICIES:
        raise InputError(f"empty: {empty!r} is not one of {', '.join(EMPTY_POLICIES)}")
    if not path.is_file():
        raise InputError(f"{path}: no such corpus file")
    if kind == "parquet":
        rows, where = _parquet_rows(path)
    else:
        text = read_utf8_text(path)
        rows, where = (_tsv_rows if kind == "tsv" else _jsonl_rows)(path, text)
    return build_corpus(rows, where, empty=empty, source=str(path))


def build_corpus(
    rows: Iterable[tuple[int, dict[str, object]]],
    where: Callable[[int], str],
    *,
    empty: str = "drop",
    source: str = "corpus",
) -> Corpus:
    """Check and collect ``(row number, record)`` rows into a corpus (shared by every reader).

    ``where(row_number)`` names the place for messages (``"data.tsv line 7"``). Language codes are
    checked once per distinct value; sentences are stripped of surrounding whitespace. No pair at all
    is an error naming ``source``.
    """
    columns: dict[str, list[str]] = {name: [] for name in (*COLUMNS, PROVENANCE)}
    known_codes: dict[object, str] = {}
    dropped = 0
    first_dropped = ""
    for number, record in rows:
        values: dict[str, str] = {}
        for field in COLUMNS:
            value = record.get(field)
            if field.endswith("_lang"):
                if value not in known_codes:
                    if not isinstance(value, str):
                        raise InputError(
                            f"{where(number)}, field {field}: expected a language code, found {value!r}"
                        )
                    known_codes[value] = check_language(value, f"{where(number)}, field {field}")
                values[field] = known_codes[value]
                continue
            if value is not None and not isinstance(value, str):
                raise InputError(
                    f"{where(number)}, field {field}: expected a string, found {type(value).__name__}"
                )
            values[field] = (value or "").strip()
        blank = next((field for field in ("src", "tgt") if not values[field]), None)
        if blank is not None:
            if empty == "error":
                raise InputError(f"{where(number)}, field {blank}: empty or whitespace-only sentence")
            dropped += 1
            first_dropped = first_dropped or f"{where(number)}, field {blank}"
            continue
        provenance = record.get(PROVENANCE)
        values[PROVENANCE] = "" if provenance is None else str(provenance)
        for field, value in values.items():
            columns[field].append(value)
    if not columns["src"]:
        why = f"all {dropped} rows have an empty sentence" if dropped else "no rows, or a header only"
        raise InputError(f"{source}: no sentence pairs ({why}); a corpus needs at least one pair")
    if dropped:
        logger.warning(
            "%s: dropped %d pair(s) with an empty or whitespace-only sentence (first: %s)",
            source,
            dropped,
            first_dropped,
        )
    return Corpus(
        *(columns[name] for name in COLUMNS),
        provenance=columns[PROVENANCE],
        dropped={"empty": dropped} if dropped else None,
    )


def read_utf8_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 raise an error naming the line and column."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError(
            f"{path} line {line}: bytes that are not UTF-8 (0x{data[error.start]:02x} at "
            f"byte column {column})"
        ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line.removesuffix("\r") for line in lines]


def _tsv_rows(path: Path, text: str) -> tuple[Iterator[Row], Callable[[int], str]]:
    lines = _lines(text)
    if not lines:
        raise InputError(
            f"{path} line 1: empty file, expected a header line {chr(9).join(COLUMNS)}[{chr(9)}{PROVENANCE}]"
        )
    header = [name.strip() for name in lines[0].split("\t")]
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise InputError(
            f"{path} line 1: column(s) {', '.join(repeated)} repeated in the header "
            f"(found: {', '.join(header)}); which one holds the sentences is ambiguous"
        )
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise InputError(
            f"{path} line 1: missing column(s) {', '.join(missing)} in the header "
            f"(found: {', '.join(header)})"
        )

    def rows() -> Iterator[tuple[int, dict[str, object]]]:
        for number, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != len(header):
                raise InputError(
                    f"{path} line {number}: expected {len(header)} tab-separated fields "
                    f"({', '.join(header)}), found {len(fields)}"
                )
            yield number, dict(zip(header, fields, strict=True))

    return rows(), lambda number: f"{path} line {number}"


def _jsonl_rows(path: Path, text: str) -> tuple[Iterator[Row], Callable[[int], str]]:
    def rows() -> Iterator[tuple[int, dict[str, object]]]:
        for number, line in enumerate(_lines(text), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            except _RepeatedKey as error:
                raise InputError(
                    f"{path} line {number}: key {error.args[0]!r} repeated in the object"
                ) from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{path} line {number}: expected a JSON object with fields {', '.join(COLUMNS)}"
                )
            missing = [name for name in COLUMNS if name not in record]
            if missing:
                raise InputError(f"{path} line {number}: missing field(s) {', '.join(missing)}")
            yield number, record

    return rows(), lambda number: f"{path} line {number}"


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object as a dict, refusing a repeated key (``json`` would keep the last one silently)."""
    record: dict[str, object] = {}
    for key, value in pairs:
        if key in record:
            raise _RepeatedKey(key)
        record[key] = value
    return record


def _parquet_rows(path: Path) -> tuple[Iterator[Row], Callable[[int], str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        missing = [name for name in COLUMNS if name not in schema.names]
        if missing:
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(schema.names)})"
            )
        wanted = [*COLUMNS, *([PROVENANCE] if PROVENANCE in schema.names else [])]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            values = column.to_pylist()
            for row, value in enumerate(values, start=1):
                try:
                    values[row - 1] = None if value is None else value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{path} row {row}, field {name}: bytes that are not UTF-8") from None
            columns[name] = values
        else:
            columns[name] = column.to_pylist()

    def rows() -> Iterator[tuple[int, dict[str, object]]]:
        names = list(columns)
        for row, values in enumerate(zip(*(columns[name] for name in names), strict=True), start=1):
            yield row, dict(zip(names, values, strict=True))

    return rows(), lambda row: f"{path} row {row}"


def check_writable(corpus: Corpus, path: str | Path) -> None:
    """Raise the error :func:`write_corpus` would raise, before anything is written: an unknown extension,
    or a tab or newline inside a sentence for TSV (which cannot store one)."""
    if corpus_format(path) != "tsv":
        return
    for name in (*COLUMNS, PROVENANCE):
        for number, value in enumerate(getattr(corpus, name), start=1):
            if "\t" in value or "\n" in value or "\r" in value:
                raise InputError(
                    f"{path}: row {number}, field {name} holds a tab or newline, "
                    "which TSV cannot store; write .jsonl or .parquet instead"
                )


def write_corpus(corpus: Corpus, path: str | Path) -> Path:
    """Write ``corpus`` as TSV, JSONL or Parquet (by extension), with the provenance column.

    The file is written whole or not at all: checked first (:func:`check_writable`), then written to a
    temporary file in the same folder that replaces ``path`` once complete.
    """
    path = Path(path)
    kind = corpus_format(path)
    check_writable(corpus, path)
    names = (*COLUMNS, PROVENANCE)
    columns = [getattr(corpus, name) for name in names]
    with atomic_target(path) as temporary:
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = {
                name: pa.array(column, type=pa.string()) for name, column in zip(names, columns, strict=True)
            }
            pq.write_table(pa.table(arrays), temporary)
        elif kind == "jsonl":
            with temporary.open("w", encoding="utf-8") as handle:
                for row in zip(*columns, strict=True):
                    handle.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n")
        else:
            with temporary.open("w", encoding="utf-8", newline="\n") as handle:
                handle.write("\t".join(names) + "\n")
                for row in zip(*columns, strict=True):
                    handle.write("\t".join(row) + "\n")
    return path


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it (``os.replace``, atomic) when the block succeeds.

    A reader never sees a half-written ``path``: on an error or a kill the temporary file is what is
    left (removed on an error), and an older ``path`` stays as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
