"""The end of a sweep without Ray: the best report of each trial, the ranking, the table and the CSV."""

from __future__ import annotations

import csv
import math

from imascl_ray.tune.results import (
    FAILED,
    FINISHED,
    NOT_RUN,
    STOPPED,
    TrialRecord,
    best_of,
    best_trial,
    format_table,
    rank,
    write_csv,
)

NAN = math.nan


def test_the_best_report_skips_gaps_and_the_closing_row():
    # Rows as Tune's metrics table gives them: missing values are NaN.
    rows = [
        {"step": 4, "val/mean/acc": 0.20, "checkpoint_path": "/c/4", "final": NAN},
        {"step": 8, "val/mean/acc": 0.55, "checkpoint_path": "/c/8", "final": NAN},
        {"step": 12, "val/mean/acc": 0.40, "checkpoint_path": "/c/12", "final": NAN},
        {"step": 12, "val/mean/acc": 0.99, "checkpoint_path": NAN, "final": 1},  # closing report
        {"step": 13, "val/mean/acc": NAN, "checkpoint_path": NAN, "final": NAN},
    ]
    assert best_of(rows, "val/mean/acc", "max") == (0.55, 8, "/c/8")
    assert best_of(rows, "val/mean/acc", "min") == (0.20, 4, "/c/4")
    assert best_of([{"step": 2, "train/loss": 1.0}], "val/mean/acc", "max") == (None, None, None)


def record(trial_id: str, status: str, best: float | None, **extra) -> TrialRecord:
    return TrialRecord(
        trial_id, f"sweep-{trial_id}", status, {"loss.tau": 0.1, "optim.lr": 1e-4}, best, **extra
    )


def test_trials_rank_best_first_and_failures_last():
    records = [
        record("a", STOPPED, 0.3),
        record("b", FAILED, None, error="Traceback ...\n  File x\nInputError: bad pair set\n"),
        record("c", FINISHED, 0.7),
        record("d", FINISHED, 0.5),
    ]
    assert [r.trial_id for r in rank(records, "max")] == ["c", "d", "a", "b"]
    assert [r.trial_id for r in rank(records, "min")] == ["a", "d", "c", "b"]


def test_the_table_shows_values_metrics_and_the_last_line_of_each_error(tmp_path):
    records = rank(
        [
            record("a", STOPPED, 0.3, best_step=4, last_step=8),
            record("b", FAILED, None, error="Traceback ...\n  File x\nInputError: bad pair set\n"),
            record("c", FINISHED, 0.7, best_step=12, last_step=12, evaluation={"local/mean/acc": 0.81}),
        ],
        "max",
    )
    table = format_table(records, ["loss.tau", "optim.lr"], "val/mean/acc")
    lines = table.splitlines()
    assert lines[0].split() == [
        "rank",
        "trial",
        "status",
        "loss.tau",
        "optim.lr",
        "best",
        "val/mean/acc",
        "best",
        "step",
        "steps",
        "local/mean/acc",
        "error",
    ]
    assert lines[2].split()[:6] == ["1", "c", "finished", "0.1", "0.0001", "0.7"]
    assert lines[3].split()[:3] == ["2", "a", "stopped"]
    assert lines[4].split()[:3] == ["-", "b", "failed"] and lines[4].endswith("InputError: bad pair set")
    assert "1 failed trial(s):" in table and "b: InputError: bad pair set" in table

    path = write_csv(records, ["loss.tau", "optim.lr"], "val/mean/acc", tmp_path / "trials.csv")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["trial"] for row in rows] == ["c", "a", "b"]
    assert rows[0]["local/mean/acc"] == "0.81" and rows[1]["status"] == "stopped early"
    assert rows[2]["error"].startswith("Traceback")  # the CSV keeps the whole error


def test_a_failed_trial_never_ranks_first_or_becomes_the_best_whatever_it_reported():
    # A trial that reported 0.9 and then crashed, one that finished at 0.5, one stopped early at 0.4.
    records = [
        record("crashed", FAILED, 0.9, error="RuntimeError: worker died"),
        record("done", FINISHED, 0.5),
        record("stopped", STOPPED, 0.4),
    ]
    ranked = rank(records, "max")
    assert [r.trial_id for r in ranked] == ["done", "stopped", "crashed"]
    assert best_trial(ranked).trial_id == "done"
    assert [r.trial_id for r in rank(records, "min")] == ["stopped", "done", "crashed"]
    table = format_table(ranked, ["loss.tau"], "val/mean/acc").splitlines()
    assert table[4].split()[:3] == ["-", "crashed", "failed"]  # listed, with its value, but unranked
    # With no trial that finished or was stopped, there is no best (so no best-config / best-model).
    assert best_trial(rank([record("crashed", FAILED, 0.9), record("x", NOT_RUN, None)], "max")) is None
