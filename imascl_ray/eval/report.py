"""Evaluation results as JSON files, as Markdown tables laid out like the paper's, and on the terminal.

Markdown (:func:`paper_markdown`) follows the paper: one row per en-xx pair with Tatoeba (en-xx), BUCC,
STS (en), STS (xx) (Tables 2 and 4); one row per model with Tatoeba, BUCC and FLORES-200 xSIM error
averaged over the languages (Tables 3 and 5); and STS per language (Table 6). "-" marks a benchmark
that has no data for that language (BUCC has no ko/ja, STS no ja), as in the paper.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imascl_ray.eval.local_suite import LOCAL_KEYS
from imascl_ray.eval.mteb_suite import PAPER_LANGUAGES

STS_COLUMNS = ("en", "ko", "fr", "ru", "en-fr")


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented UTF-8 JSON (NaN becomes ``null``), creating parent folders."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_finite(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined numbers (a constant STS prediction) are written as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _cell(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _as_list(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [results] if isinstance(results, Mapping) else list(results)


def paper_markdown(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Markdown tables of one or more paper-suite results (rows per model, as the paper compares)."""
    runs = _as_list(results)
    per_language = []
    for xx in PAPER_LANGUAGES:
        for run in runs:
            entry = run["summary"]["languages"][xx]
            per_language.append(
                [
                    f"en-{xx}",
                    run["model"]["name"],
                    _cell(entry["tatoeba"]),
                    _cell(entry["bucc"]),
                    _cell(entry["sts_en"]),
                    _cell(entry["sts_xx"]),
                ]
            )
    overall = [
        [
            run["model"]["name"],
            _cell(run["summary"]["mean"]["tatoeba"]),
            _cell(run["summary"]["mean"]["bucc"]),
            _cell(run["summary"]["mean"]["flores_xsim"]),
        ]
        for run in runs
    ]
    sts = [
        [run["model"]["name"], *(_cell(run["summary"]["sts"].get(lang)) for lang in STS_COLUMNS)]
        for run in runs
    ]
    return (
        "\n\n".join(
            [
                "### Bitext mining and STS per language pair (paper Tables 2 and 4)",
                _table(["Lang", "Model", "Tatoeba (en-xx)", "BUCC", "STS (en)", "STS (xx)"], per_language),
                "### Bitext mining over all languages (paper Tables 3 and 5)",
                _table(["Model", "Tatoeba", "BUCC", "FLORES-200 (xSIM error)"], overall),
                "### STS per language (paper Table 6)",
                _table(["Model", *(f"STS {lang}" for lang in STS_COLUMNS)], sts),
                "Tatoeba and BUCC: accuracy averaged over both directions; FLORES-200: xSIM error (xx -> en, "
                "ratio margin, k = 4), lower is better; STS: Spearman correlation of cosine similarities.",
            ]
        )
        + "\n"
    )


def paper_terminal(result: Mapping[str, Any]) -> str:
    """Per-task detail lines, then the paper's tables, for printing."""
    lines = [f"model: {result['model']['name']}  revision: {result['model']['revision']}"]
    for task_name, pairs in result["tasks"].items():
        for pair, entry in pairs.items():
            if "spearman" in entry:
                lines.append(
                    f"  {task_name:<19} {pair:<8} spearman {_cell(entry['spearman'])}  n {entry['n']}"
                )
            else:
                lines.append(
                    f"  {task_name:<19} {pair:<8} acc {_cell(entry['accuracy'])} "
                    f"(src->tgt {_cell(entry['accuracy_src_to_tgt'])},"
                    f" tgt->src {_cell(entry['accuracy_tgt_to_src'])})"
                    f"  margin {_cell(entry['margin_accuracy'])}  xsim {_cell(entry['xsim_error'])}"
                    f"  mteb f1 {_cell(entry.get('mteb_f1'))}  n {entry['n']}"
                )
    return "\n".join(lines) + "\n\n" + paper_markdown(result)


def local_terminal(results: Mapping[str, Mapping[str, float]]) -> str:
    """An aligned table: one row per language pair, accuracy both ways, margin accuracy, xSIM, n."""
    header = ["pair", "accuracy", "src->tgt", "tgt->src", "margin", "xsim", "n"]
    rows = [
        [pair, *(_cell(entry[key]) for key in LOCAL_KEYS[:-1]), str(int(entry["n"]))]
        for pair, entry in results.items()
    ]
    if len(results) > 1:
        means = [sum(entry[key] for entry in results.values()) / len(results) for key in LOCAL_KEYS[:-1]]
        rows.append(
            ["mean", *(_cell(value) for value in means), str(sum(int(e["n"]) for e in results.values()))]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            str(cell).rjust(width) if i else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    )
