"""Load a parallel corpus through Hugging Face ``datasets`` (the hub, a local dataset folder or files).

Datasets lay out pairs differently, so the layout is configurable:

- flat columns (the default, and OPUS-style parquet datasets such as ``wecover/OPUS``): the texts in
  ``src_column`` / ``tgt_column``; the languages either fixed (``src_lang="en", tgt_lang="fr"``) or
  read per row from ``src_lang_column`` / ``tgt_lang_column``;
- a translation dict (``Helsinki-NLP/opus-100`` style): ``translation_column="translation"`` holds
  ``{"en": ..., "fr": ...}``; the two languages come from ``src_lang``/``tgt_lang`` or from a config
  name such as ``"en-fr"``.

The same function serves the hub (``load_hub_corpus("wecover/OPUS", name="fr")``), local data files
(``load_hub_corpus("json", data_files=...)`` or a folder of files) and a folder written by
``Dataset.save_to_disk`` (read with ``datasets.load_from_disk``). Rows go through the same checks as
the file readers: errors name the dataset, split, row and field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imascl_ray.data.corpus import PROVENANCE, Corpus
from imascl_ray.data.corpus_files import build_corpus
from imascl_ray.data.languages import check_language
from imascl_ray.errors import InputError


def _is_saved_dataset(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def _open_dataset(
    path: str,
    name: str | None,
    split: str,
    revision: str | None,
    data_files: Any,
    cache_dir: str | None,
    label: str,
) -> Any:
    import datasets

    if _is_saved_dataset(path):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise InputError(f"{label}: no split {split!r} (splits: {', '.join(loaded)})")
            return loaded[split]
        return loaded
    try:
        return datasets.load_dataset(
            path, name, split=split, revision=revision, data_files=data_files, cache_dir=cache_dir
        )
    except (FileNotFoundError, ValueError) as error:
        raise InputError(f"{label}: could not load the dataset ({error})") from error


def load_hub_corpus(
    path: str,
    *,
    name: str | None = None,
    split: str = "train",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    src_column: str = "src",
    tgt_column: str = "tgt",
    src_lang_column: str = "src_lang",
    tgt_lang_column: str = "tgt_lang",
    translation_column: str | None = None,
    provenance_column: str | None = None,
    provenance: str | None = None,
    revision: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
    limit: int | None = None,
    empty: str = "drop",
    batch_size: int = 10_000,
) -> Corpus:
    """Load pairs from a ``datasets`` dataset into a :class:`Corpus`.

    Args:
        path: a hub id (``"wecover/OPUS"``), a builder (``"json"``, ``"parquet"``) with ``data_files``,
            a local folder of data files, or a ``save_to_disk`` folder.
        name: the dataset config (``"fr"``, ``"en-fr"``).
        split: which split to read.
        src_lang, tgt_lang: fixed languages of every row; when not given, flat layouts read them from
            ``src_lang_column``/``tgt_lang_column``, and translation layouts from ``name`` (``"en-fr"``).
        src_column, tgt_column: the text columns (flat layout).
        translation_column: the column holding ``{lang: text}`` dicts (translation layout).
        provenance_column: a column to copy into provenance; else every row gets ``provenance``
            (default ``"hub:<path>[/<name>]"``).
        revision, data_files, cache_dir: passed to ``datasets.load_dataset``.
        limit: read at most this many rows (the first ones).
        empty: ``"drop"`` rows with an empty sentence (counted) or raise an ``"error"``.
    """
    label = f"dataset {path}" + (f" ({name})" if name else "") + f" [{split}]"
    dataset = _open_dataset(path, name, split, revision, data_files, cache_dir, label)
    available = list(dataset.column_names)
    provenance = provenance or f"hub:{path}" + (f"/{name}" if name else "")

    src_lang = check_language(src_lang, f"{label}: src_lang") if src_lang is not None else None
    tgt_lang = check_language(tgt_lang, f"{label}: tgt_lang") if tgt_lang is not None else None
    if translation_column is not None:
        if (src_lang is None or tgt_lang is None) and name and name.count("-") == 1:
            src_lang, tgt_lang = (src_lang or name.split("-")[0]), (tgt_lang or name.split("-")[1])
        if src_lang is None or tgt_lang is None:
            raise InputError(
                f"{label}: src_lang and tgt_lang are needed to read the translation column "
                f"{translation_column!r}"
            )
        needed = [translation_column]
    else:
        needed = [src_column, tgt_column]
        needed += [
            column
            for column, fixed in ((src_lang_column, src_lang), (tgt_lang_column, tgt_lang))
            if fixed is None
        ]
    if provenance_column is not None:
        needed.append(provenance_column)
    missing = [column for column in needed if column not in available]
    if missing:
        raise InputError(f"{label}: missing column(s) {', '.join(missing)} (columns: {', '.join(available)})")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))

    def rows() -> Iterator[tuple[int, dict[str, object]]]:
        number = 0
        for batch in dataset.select_columns(needed).iter(batch_size=batch_size):
            count = len(batch[needed[0]])
            for offset in range(count):
                number += 1
                if translation_column is not None:
                    translation = batch[translation_column][offset] or {}
                    src, tgt = translation.get(src_lang), translation.get(tgt_lang)
                else:
                    src, tgt = batch[src_column][offset], batch[tgt_column][offset]
                record: dict[str, object] = {
                    "src_lang": src_lang if src_lang is not None else batch[src_lang_column][offset],
                    "tgt_lang": tgt_lang if tgt_lang is not None else batch[tgt_lang_column][offset],
                    "src": src,
                    "tgt": tgt,
                    PROVENANCE: batch[provenance_column][offset] if provenance_column else provenance,
                }
                yield number, record

    return build_corpus(rows(), lambda number: f"{label} row {number}", empty=empty, source=label)
