"""The before/after figure: what it draws, and ``imascl-ray eval --baseline`` writing it next to the table
and logging it to its MLflow run (artifacts next to the sqlite store, not in ./mlruns)."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from test_eval_cli import GROUPS, FakeCorpus, parse

from imascl_ray.commands import eval as eval_command
from imascl_ray.eval.figure import before_after_figure, bitext_directions, write_figure
from imascl_ray.eval.hashing_encoder import HashingEncoder
from imascl_ray.tracking.models import ARTIFACTS_FOLDER

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _entry(forward: float, backward: float) -> dict:
    return {
        "accuracy": (forward + backward) / 2,
        "accuracy_src_to_tgt": forward,
        "accuracy_tgt_to_src": backward,
    }


def test_bars_show_each_pair_both_directions_before_and_after(tmp_path):
    before = {"en-fr": _entry(0.5, 0.6), "en-ko": _entry(0.4, 0.3)}
    after = {"en-fr": _entry(0.9, 0.8), "en-ko": _entry(0.7, 0.75)}
    figure = before_after_figure(after, before)
    forward, backward = figure.axes
    assert [tick.get_text() for tick in forward.get_xticklabels()] == ["en→fr", "en→ko"]
    assert [tick.get_text() for tick in backward.get_xticklabels()] == ["fr→en", "ko→en"]
    heights = [[bar.get_height() for bar in container] for container in forward.containers]
    assert heights == [[0.5, 0.4], [0.9, 0.7]]  # pretrained, then trained
    assert [[bar.get_height() for bar in c] for c in backward.containers] == [[0.6, 0.3], [0.8, 0.75]]
    path = write_figure(figure, tmp_path / "f" / "results.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_paper_results_draw_their_bitext_tasks_only():
    result = {
        "summary": {},
        "tasks": {
            "Tatoeba": {"fra-eng": _entry(0.9, 0.92)},
            "STS17": {"ko-ko": {"spearman": 0.8, "n": 10}},
        },
    }
    assert bitext_directions(result) == {"Tatoeba fra-eng": (0.9, 0.92)}
    with pytest.raises(ValueError, match="no bitext"):
        before_after_figure({"summary": {}, "tasks": {"STS17": {"ko-ko": {"spearman": 0.8}}}})


class TwoModels:
    """A baseline that cannot tell sentences apart, and a model that can."""

    def __call__(self, model, *, prefix=None):
        return HashingEncoder(dim=2 if model == "base" else 64, name=model)


def test_eval_with_a_baseline_writes_the_figure_next_to_the_table_and_logs_it(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("header\n")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    args = parse(
        "tuned",
        "--pairs",
        str(pairs),
        "--baseline",
        "base",
        "--output",
        str(tmp_path / "out" / "scores.json"),
        "--mlflow-experiment",
        "evals",
        "--tracking-uri",
        uri,
    )
    code = eval_command.execute(args, load_encoder=TwoModels(), read_corpus=lambda _: FakeCorpus(GROUPS))
    assert code == 0
    written = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert set(written) == {"baseline", "model", "monolingual_structure"}
    structure = written[
        "monolingual_structure"
    ]  # the model's within-language geometry against the baseline's
    assert {"en", "fr", "mean"} <= set(structure) and all(-1 <= v <= 1 for v in structure.values())
    assert written["model"]["en-fr"]["accuracy"] > written["baseline"]["en-fr"]["accuracy"]
    assert (tmp_path / "out" / "scores.png").read_bytes().startswith(PNG_SIGNATURE)
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("evals").experiment_id])
    assert run.data.metrics["baseline/local/en-fr/acc"] == pytest.approx(
        written["baseline"]["en-fr"]["accuracy"]
    )
    assert run.data.metrics["local/structure/mean"] == pytest.approx(structure["mean"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == [
        eval_command.FIGURE_ARTIFACT
    ]
    assert list((tmp_path / "store" / ARTIFACTS_FOLDER).rglob("before_after.png"))  # next to the store
    assert list(cwd.iterdir()) == []
