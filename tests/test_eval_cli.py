"""``imascl-ray eval``: argument handling and output, with model and corpus loading injected."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imascl_ray.cli import build_parser, discover_commands, main
from imascl_ray.commands import eval as eval_command
from imascl_ray.eval.hashing_encoder import HashingEncoder
from imascl_ray.eval.local_suite import LOCAL_KEYS, evaluate_pair_groups

GROUPS = {
    "en-fr": (
        [f"{i} the red cat number {i}" for i in range(12)],
        [f"{i} le chat rouge {i}" for i in range(12)],
    ),
    "en-ko": ([f"{i} blue sky {i * 3}" for i in range(8)], [f"{i} 파란 하늘 {i * 3}" for i in range(8)]),
}


class FakeCorpus:
    def __init__(self, groups):
        self._groups = groups

    def groups(self):
        return self._groups


def parse(*argv):
    return build_parser(discover_commands()).parse_args(["eval", *argv])


class Loader:
    """Records how the model was asked for, returns a deterministic encoder."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, *, prefix=None):
        self.calls.append((model, prefix))
        return HashingEncoder(dim=32, prefix=prefix or "", name="org/fake")


def test_exactly_one_of_suite_or_pairs_is_required(capsys):
    for argv in ([], ["--suite", "paper", "--pairs", "a.tsv"], ["--suite", "other"]):
        with pytest.raises(SystemExit) as stop:
            parse("model", *argv)
        assert stop.value.code == 2
    args = parse("model", "--pairs", "a.tsv", "b.jsonl", "--prefix", "query: ", "--output", "o.json")
    assert args.pairs == ["a.tsv", "b.jsonl"] and args.prefix == "query: " and args.output == "o.json"
    assert parse("model", "--suite", "paper").prefix is None  # None: the folder's own prefix


def test_local_suite_prints_and_writes_json_shaped_as_documented(tmp_path, capsys):
    files = [tmp_path / "a.tsv", tmp_path / "b.tsv"]
    for path in files:
        path.write_text("header\n")
    by_file = {files[0]: {"en-fr": GROUPS["en-fr"]}, files[1]: {"en-ko": GROUPS["en-ko"]}}
    loader = Loader()
    output = tmp_path / "out" / "results.json"
    code = eval_command.execute(
        parse("my-model", "--pairs", *map(str, files), "--output", str(output)),
        load_encoder=loader,
        read_corpus=lambda path: FakeCorpus(by_file[path]),
    )
    assert code == 0
    assert loader.calls == [("my-model", None)]
    written = json.loads(output.read_text())
    assert list(written) == ["en-fr", "en-ko"]
    assert all(tuple(entry) == LOCAL_KEYS for entry in written.values())
    expected = evaluate_pair_groups(HashingEncoder(dim=32), GROUPS)
    assert written["en-ko"]["accuracy"] == pytest.approx(expected["en-ko"]["accuracy"])
    assert written["en-fr"]["n"] == 12
    printed = capsys.readouterr().out
    assert "en-fr" in printed and "xsim" in printed and str(output) in printed


def test_prefix_is_passed_to_the_model_loader(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("x\n")
    loader = Loader()
    eval_command.execute(
        parse("m", "--pairs", str(path), "--prefix", "query: "),
        load_encoder=loader,
        read_corpus=lambda _: FakeCorpus(GROUPS),
    )
    assert loader.calls == [("m", "query: ")]


def test_missing_pair_file_is_one_line_error_with_exit_code_2(tmp_path, capsys):
    assert main(["eval", "m", "--pairs", str(tmp_path / "nope.tsv")]) == 2
    err = capsys.readouterr().err
    assert "nope.tsv" in err and "not found" in err and "Traceback" not in err


def test_paper_suite_writes_json_markdown_and_mlflow(tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from test_eval_mteb_suite import inject

    from imascl_ray.eval.mteb_suite import PAPER_SUITE, paper_tasks

    tasks = inject(paper_tasks([s for s in PAPER_SUITE if s.mteb_name in ("Tatoeba", "STS17")]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = parse(
        "org/fake",
        "--suite",
        "paper",
        "--output",
        str(tmp_path / "paper.json"),
        "--markdown",
        str(tmp_path / "paper.md"),
        "--mlflow-experiment",
        "evals",
        "--tracking-uri",
        uri,
    )
    assert eval_command.execute(args, load_encoder=Loader(), tasks=tasks) == 0
    result = json.loads((tmp_path / "paper.json").read_text())
    assert result["model"]["name"] == "org/fake"
    assert set(result["tasks"]) == {"Tatoeba", "STS17"}
    assert "| Lang | Model | Tatoeba (en-xx)" in (tmp_path / "paper.md").read_text()
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("evals").experiment_id])
    assert run.data.metrics["tatoeba/fra-eng/acc"] == pytest.approx(
        result["tasks"]["Tatoeba"]["fra-eng"]["accuracy"]
    )
    assert "sts17/ko-ko/spearman" in run.data.metrics
    assert "en-ko" in capsys.readouterr().out


def test_command_module_is_cheap_to_import():
    code = (
        "import sys, imascl_ray.commands.eval; "
        "print(any(m in sys.modules for m in ('torch', 'mteb', 'mlflow')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
