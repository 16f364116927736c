"""The end of a sweep in plain Python: trial records, ranked best first, as a table and a CSV.

The sweep (:mod:`imascl_ray.tune.sweep`) turns Tune's results into :class:`TrialRecord` s; from here on
nothing needs Ray: ranking, the printed table, the CSV, and the failed trials with their errors.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINISHED = "finished"
STOPPED = "stopped early"
FAILED = "failed"
NOT_RUN = "not run"


@dataclass
class TrialRecord:
    """One trial of a sweep, as the table shows it."""

    trial_id: str
    run_name: str
    status: str
    """``finished``, ``stopped early`` (by the scheduler), ``failed`` or ``not run``."""
    params: dict[str, Any]
    """The searched values."""
    best: float | None = None
    """The best value of the sweep's metric over the trial's reports (max or min by the mode)."""
    best_step: int | None = None
    last_step: int | None = None
    checkpoint: str | None = None
    """The checkpoint reported with the best value (Ray Train's storage)."""
    evaluation: dict[str, float] = field(default_factory=dict)
    """The evaluation of the trial's exported model (``eval.suite``), for finished trials."""
    error: str | None = None


def best_of(
    rows: Iterable[dict[str, Any]], metric: str, mode: str
) -> tuple[float | None, int | None, str | None]:
    """``(value, step, checkpoint path)`` of the best report carrying a finite ``metric``."""
    best: tuple[float | None, int | None, str | None] = (None, None, None)
    for row in rows:
        value = row.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        if is_closing(row):  # the trial's closing report repeats its best value, without a checkpoint
            continue
        if best[0] is None or (value > best[0] if mode == "max" else value < best[0]):
            step, checkpoint = row.get("step"), row.get("checkpoint_path")
            best = (
                float(value),
                int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None,
                checkpoint if isinstance(checkpoint, str) and checkpoint else None,
            )
    return best


def is_closing(row: dict[str, Any]) -> bool:
    """Whether a reported row is a trial's closing report (``final=1``; a table's gaps are NaN)."""
    return row.get("final") == 1


def can_be_best(record: TrialRecord) -> bool:
    """Whether a trial may be the sweep's best: it has a value and it finished, or the scheduler stopped
    it (a trial that failed or never ran cannot win, whatever it reported before)."""
    return record.best is not None and record.status in (FINISHED, STOPPED)


def rank(records: Sequence[TrialRecord], mode: str) -> list[TrialRecord]:
    """The trials that can be best (:func:`can_be_best`), best first; then the others (failed, not
    run), in their original order."""
    ranked = [r for r in records if can_be_best(r)]
    others = [r for r in records if not can_be_best(r)]
    ranked.sort(key=lambda r: r.best if mode == "min" else -r.best)  # type: ignore[operator]
    return ranked + others


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The best of ``records`` (already ranked): the first one that can be best, or None."""
    return next((record for record in records if can_be_best(record)), None)


def summary_columns(records: Sequence[TrialRecord], limit: int = 4) -> list[str]:
    """The evaluation columns worth a place in the printed table: the means over pairs, at most ``limit``."""
    keys = sorted({key for r in records for key in r.evaluation if "/mean/" in key and key.endswith("/acc")})
    return keys[:limit]


def table_rows(
    records: Sequence[TrialRecord], parameters: Sequence[str], metric: str, *, full: bool = False
) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: rank, trial, status, the searched values, the metric, steps, evaluation, error.

    ``full`` keeps every evaluation metric and the whole error text (the CSV); otherwise the means and
    the error's last line (the printed table).
    """
    evaluation = sorted({key for r in records for key in r.evaluation}) if full else summary_columns(records)
    header = ["rank", "trial", "status", *parameters, f"best {metric}", "best step", "steps", *evaluation]
    header.append("error")
    rows = []
    for position, record in enumerate(records, start=1):
        error = record.error or ""
        if error and not full:
            error = last_line(error)
        rows.append(
            [
                str(position) if can_be_best(record) else "-",
                record.trial_id,
                record.status,
                *(_cell(record.params.get(key)) for key in parameters),
                _cell(record.best),
                _cell(record.best_step),
                _cell(record.last_step),
                *(_cell(record.evaluation.get(key)) for key in evaluation),
                error,
            ]
        )
    return header, rows


def format_table(records: Sequence[TrialRecord], parameters: Sequence[str], metric: str) -> str:
    """The trials as an aligned text table, best first (``records`` already ranked), failures listed."""
    header, rows = table_rows(records, parameters, metric)
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    failed = [r for r in records if r.status == FAILED]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} failed trial(s):")
        for record in failed:
            lines.append(f"  {record.trial_id}: {last_line(record.error or 'unknown error')}")
    return "\n".join(lines)


def write_csv(records: Sequence[TrialRecord], parameters: Sequence[str], metric: str, path: Path) -> Path:
    """Every column (all evaluation metrics, whole errors) as CSV."""
    header, rows = table_rows(records, parameters, metric, full=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def last_line(text: str) -> str:
    """The last non-empty line of an error text (a Ray traceback ends with the exception's message)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
