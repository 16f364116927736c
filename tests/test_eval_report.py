"""Reports: JSON files, the paper-style Markdown tables and the local terminal table."""

from __future__ import annotations

import json

from imascl_ray.eval.mteb_suite import paper_summary
from imascl_ray.eval.report import local_terminal, paper_markdown, write_json


def fake_result(name: str, offset: float = 0.0) -> dict:
    tasks = {
        "Tatoeba": {
            p: {"accuracy": 0.9 + offset + i / 100, "xsim_error": 0.1}
            for i, p in enumerate(("fra-eng", "jpn-eng", "kor-eng", "rus-eng"))
        },
        "BUCC.v2": {"fr-en": {"accuracy": 0.98 + offset}, "ru-en": {"accuracy": 0.96 + offset}},
        "FloresBitextMining": {
            p: {"xsim_error": 0.02 * (i + 1)}
            for i, p in enumerate(("fra-eng", "jpn-eng", "kor-eng", "rus-eng"))
        },
        "STSBenchmark.v2": {"en": {"spearman": 0.8}},
        "STS17": {"en-en": {"spearman": 0.7}, "ko-ko": {"spearman": 0.75}, "fr-en": {"spearman": 0.72}},
        "STS22.v2": {"en": {"spearman": 0.6}, "fr": {"spearman": 0.65}, "ru": {"spearman": 0.55}},
    }
    return {"model": {"name": name, "revision": "r"}, "tasks": tasks, "summary": paper_summary(tasks)}


def rows_of(markdown: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith(f"| {first_cell} ")
    ]


def test_markdown_has_the_papers_tables_with_dashes_where_no_data_exists():
    markdown = paper_markdown([fake_result("org/ours"), fake_result("org/base", offset=-0.05)])
    assert "| Lang | Model | Tatoeba (en-xx) | BUCC | STS (en) | STS (xx) |" in markdown
    assert "| Model | Tatoeba | BUCC | FLORES-200 (xSIM error) |" in markdown
    ko = rows_of(markdown, "en-ko")
    assert [row[1] for row in ko] == ["org/ours", "org/base"]
    # Tatoeba kor-eng 0.92; BUCC has no ko; STS (en) = mean(.8, .7, .6); STS (ko) = STS17 ko-ko
    assert ko[0][2:] == ["0.920", "-", "0.700", "0.750"]
    assert rows_of(markdown, "en-ja")[0][5] == "-"
    assert rows_of(markdown, "en-fr")[0][3] == "0.980"
    overall = rows_of(markdown, "org/ours")
    assert overall[0][1:] == ["0.915", "0.970", "0.050"]  # Tatoeba mean, BUCC mean, FLORES mean xSIM
    assert overall[1][1:] == ["0.700", "0.750", "0.650", "0.550", "0.720"]  # STS en ko fr ru en-fr


def test_json_writes_nan_as_null(tmp_path):
    path = write_json({"en-fr": {"accuracy": 0.5, "spearman": float("nan")}}, tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text()) == {"en-fr": {"accuracy": 0.5, "spearman": None}}


def test_local_terminal_table():
    results = {
        "en-fr": {
            "accuracy": 0.8,
            "accuracy_src_to_tgt": 0.7,
            "accuracy_tgt_to_src": 0.9,
            "margin_accuracy": 0.85,
            "xsim_error": 0.1,
            "n": 10,
        },
        "en-ru": {
            "accuracy": 0.6,
            "accuracy_src_to_tgt": 0.5,
            "accuracy_tgt_to_src": 0.7,
            "margin_accuracy": 0.65,
            "xsim_error": 0.3,
            "n": 30,
        },
    }
    lines = local_terminal(results).splitlines()
    assert lines[0].split() == ["pair", "accuracy", "src->tgt", "tgt->src", "margin", "xsim", "n"]
    assert lines[1].split() == ["en-fr", "0.800", "0.700", "0.900", "0.850", "0.100", "10"]
    assert lines[3].split() == ["mean", "0.700", "0.600", "0.800", "0.750", "0.200", "40"]
