"""Bad inputs of a new user (issue 14's thirteen, and a few more) through the real command line.

Each one must give exactly one line on stderr naming the file and line, or the key, exit with code 2,
and leave nothing behind of what the command was about to write: every command runs in an empty
folder holding only its input files, and that folder must hold the same files afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = "src_lang\ttgt_lang\tsrc\ttgt\n"
GOOD_ROW = "en\tfr\tOpen the selected file now\tOuvrir le fichier choisi maintenant\n"


def tsv(*lines: str, header: str = HEADER) -> bytes:
    return (header + "".join(lines)).encode("utf-8")


PREPARE = ["corpus", "prepare", "in.tsv", "--train-out", "out/train.tsv"]
TRAIN = ["train", "quickstart", "tracking.output_dir=runs"]

# (name, input files, command, the stderr line after "imascl-ray <command>: error: ", as a regex)
CASES = [
    (
        "a TSV header that repeats a column",
        {"in.tsv": tsv(GOOD_ROW + "\tOne more", header="src_lang\ttgt_lang\tsrc\ttgt\tsrc\n")},
        PREPARE,
        r"in\.tsv line 1: column\(s\) src repeated in the header",
    ),
    (
        "no validation pairs",
        {},
        [*TRAIN, "data.validation_pairs=0"],
        r"data\.validation_pairs must be at least 1, got 0",
    ),
    (
        "a trimmed vocabulary evaluated on other texts",
        {},
        [*TRAIN, "model.trim_vocabulary=true", "eval.suite=paper"],
        r"model\.trim_vocabulary=true and eval\.suite=paper: ",
    ),
    (
        "a model that is neither a folder nor a hub id",
        {"pairs.tsv": tsv(GOOD_ROW)},
        ["eval", "./no-such-model", "--pairs", "pairs.tsv", "--output", "scores.json"],
        r"\./no-such-model: no such model folder, and not a Hugging Face hub id",
    ),
    (
        "a hub id with the hub offline and no cached copy",
        {"pairs.tsv": tsv(GOOD_ROW)},
        ["eval", "no-such-org/no-such-model", "--pairs", "pairs.tsv", "--output", "scores.json"],
        r"no-such-org/no-such-model: no such model folder, and the hub is offline",
    ),
    (
        "a corpus file that does not exist",
        {},
        [*TRAIN, "data.corpus=nope.tsv"],
        r"data\.corpus: nope\.tsv: no such corpus file",
    ),
    (
        "a student that is neither a folder nor a hub id",
        {},
        [*TRAIN, "model.name=./my-model"],
        r"model\.name: \./my-model: no such model folder, and not a Hugging Face hub id",
    ),
    (
        "a missing column",
        {"in.tsv": tsv("en\tfr\tOpen the file now\n", header="src_lang\ttgt_lang\tsrc\n")},
        PREPARE,
        r"in\.tsv line 1: missing column\(s\) tgt",
    ),
    (
        "a line with the wrong number of fields",
        {"in.tsv": tsv(GOOD_ROW, "en\tfr\tOnly a source\n")},
        PREPARE,
        r"in\.tsv line 3: expected 4 tab-separated fields",
    ),
    (
        "bytes that are not UTF-8",
        {"in.tsv": tsv(GOOD_ROW) + "en\tfr\tCaf\xe9 au lait\tCafé au lait\n".encode("latin-1")},
        PREPARE,
        r"in\.tsv line 3: bytes that are not UTF-8",
    ),
    (
        "an empty sentence",
        {"in.tsv": tsv(GOOD_ROW, "en\tfr\tOpen the file now\t  \n")},
        [*PREPARE, "--empty", "error"],
        r"in\.tsv line 3, field tgt: empty or whitespace-only sentence",
    ),
    (
        "an unknown language code",
        {"in.tsv": tsv(GOOD_ROW, "en\tjp\tOpen the file now\tファイルを開く\n")},
        PREPARE,
        r"in\.tsv line 3, field tgt_lang: .*'jp'",
    ),
    (
        "a JSON value of the wrong type",
        {"in.jsonl": b'{"src_lang": "en", "tgt_lang": "fr", "src": 5, "tgt": "cinq"}\n'},
        ["corpus", "prepare", "in.jsonl", "--train-out", "out/train.jsonl"],
        r"in\.jsonl line 1, field src: expected a string, found int",
    ),
    (
        "an unknown config key",
        {"run.yaml": b"loss:\n  tau: 0.1\n  tua: 0.2\n"},
        ["train", "run.yaml", "tracking.output_dir=runs"],
        r"run\.yaml, line 3: unknown key 'loss\.tua' \(did you mean 'loss\.tau'\?\)",
    ),
    (
        "an override of the wrong type",
        {},
        [*TRAIN, "schedule.global_batch_size=many"],
        r"command line \(schedule\.global_batch_size=many\): schedule\.global_batch_size must be int",
    ),
    (
        "a bad search-space line",
        {"space.yaml": b"base: quickstart\nsearch:\n  loss.tau: {uniformm: [0.05, 0.2]}\n"},
        ["tune", "space.yaml", "tracking.output_dir=runs"],
        r"space\.yaml, line 3: .*unknown distribution 'uniformm'",
    ),
]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize(("name", "inputs", "argv", "message"), CASES, ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, name, inputs, argv, message):
    for relative, content in inputs.items():
        (tmp_path / relative).write_bytes(content)
    before = files_under(tmp_path)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    environment.pop("IMASCL_DEBUG", None)
    environment["HF_HUB_OFFLINE"] = "1"  # as on the test machines: nothing from the hub
    result = subprocess.run(
        [sys.executable, "-m", "imascl_ray", *argv],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"imascl-ray {argv[0]}: error: "), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert files_under(tmp_path) == before


def test_debug_shows_the_traceback(tmp_path):
    """``--debug`` (or IMASCL_DEBUG=1) is for bug reports: the same error, with its traceback."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for argv, extra in (
        (["--debug", "config", "quickstart", "loss.tua=1"], {}),
        (["config", "quickstart", "loss.tua=1", "--debug"], {}),
        (["config", "quickstart", "loss.tua=1"], {"IMASCL_DEBUG": "1"}),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "imascl_ray", *argv],
            cwd=tmp_path,
            env={**environment, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, argv
        assert "Traceback (most recent call last)" in result.stderr, argv
        assert "InputError: command line (loss.tua=1): unknown key 'loss.tua'" in result.stderr, argv
