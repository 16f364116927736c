"""A 3-trial smoke sweep on a real local Ray cluster, logging over HTTP to a real ``mlflow server``.

One sweep (about two minutes on 2 cores) checks what the issue asks of a sweep: ASHA stops a trailing
trial early and the next trial still starts (its Train placement group is freed); the trials share one
teacher cache over both pair sets; the table, best config and best model are right; and MLflow, asked
through its REST API, holds the parent run and three nested child runs with params, metric histories,
tags and the model (so an ``http://`` tracking URI works for training runs too).
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer

from imascl_ray.config import flatten, load_config
from imascl_ray.data import read_corpus, write_corpus
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.eval.local_suite import evaluate_pair_groups, flatten_local
from imascl_ray.preparation import PreparedRun
from imascl_ray.teacher import TeacherCache
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.tracking.models import logged_model_of
from imascl_ray.tune import results
from imascl_ray.tune.space import load_space
from imascl_ray.tune.sweep import run_sweep
from imascl_ray.tune.trainable import read_events

pytestmark = pytest.mark.slow

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    corpus = synthetic_parallel_corpus(600, pair_names=("en-fr", "en-ru"))
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.1),
        "corpus": write_corpus(corpus, folder / "corpus.parquet"),
    }


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a sqlite store, one worker, no job runner; stopped by its id."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start(timeout_s=90)
    try:
        yield server.url
    finally:
        server.stop()


def rest(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One MLflow REST call: GET with query parameters, or POST with a JSON body."""
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def as_dict(entries: list[dict]) -> dict:
    return {entry["key"]: entry["value"] for entry in entries}


def test_a_smoke_sweep_stops_a_trailing_trial_starts_the_next_and_logs_over_http(
    ray_cluster, assets, mlflow_server, tmp_path
):
    space = load_space(
        SPACES / "smoke.yaml",
        [
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            f"tracking.output_dir={tmp_path}",
            f"tracking.mlflow_uri={mlflow_server}",
            "tracking.experiment=tune-smoke",
        ],
    )
    outcome = run_sweep(space)
    records = {record.trial_id: record for record in outcome.records}
    assert len(records) == 3 and not outcome.all_failed
    starts = [event for event in read_events(outcome.directory) if event["event"] == "start"]
    order = [event["trial_id"] for event in starts]
    assert len(order) == 3  # one trial at a time, each started once

    # The known-bad second point (lr 1e-6) trails the known-good first one and ASHA stops it early;
    # the third trial starts after it and trains (its workers got the CPUs back).
    first, second, third = (records[trial] for trial in order)
    assert first.params["optim.lr"] == 5e-3 and second.params["optim.lr"] == 1e-6
    assert first.status == results.FINISHED and first.last_step == 12
    assert second.status == results.STOPPED and second.last_step < 12
    assert third.status in (results.FINISHED, results.STOPPED) and third.last_step >= 4
    assert third.best is not None

    # Ranked best first; the best config is a recipe for that trial; the best model is its export.
    values = [record.best for record in outcome.records]
    assert values == sorted(values, reverse=True) and outcome.best is outcome.records[0]
    best = outcome.best
    config = load_config(outcome.best_config)
    assert flatten(config) == flatten(space.trial_config(best.params)) | {"tracking.run_name": None}
    run_dir = tmp_path / "runs" / best.run_name
    test_groups = read_corpus(PreparedRun.load(run_dir).test).groups()
    exported = evaluate_pair_groups(SentenceEncoder.from_pretrained(outcome.best_model), test_groups)
    if best.status == results.FINISHED:
        assert flatten_local(exported)["local/mean/acc"] == pytest.approx(best.evaluation["local/mean/acc"])
    assert "rank" in outcome.table and best.trial_id in outcome.table

    # One teacher cache, over the union of both pair sets' training sentences, used by every trial.
    caches = list((tmp_path / "cache" / "teacher").glob("teacher-*"))
    assert len(caches) == 1
    union: set[str] = set()
    pair_sets = set()
    for record in outcome.records:
        prepared = PreparedRun.load(tmp_path / "runs" / record.run_name)
        assert Path(prepared.teacher_cache) == caches[0] and prepared.teacher_rows
        union |= set(read_corpus(prepared.train).sentences())
        pair_sets.add(record.params["data.pair_set"])
    if pair_sets == {"en-fr", "en-fr+en-ru"}:
        assert len(TeacherCache.open(caches[0])) == len(union)
    else:
        assert len(TeacherCache.open(caches[0])) > len(union)  # the cache also holds en-ru

    # MLflow over HTTP: the parent run and three nested child runs with params, metrics, tags, model.
    experiment = rest(mlflow_server, "experiments/get-by-name", experiment_name="tune-smoke")["experiment"]
    runs = rest(
        mlflow_server, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 50}
    )
    runs = runs["runs"]
    parents = [r for r in runs if "mlflow.parentRunId" not in as_dict(r["data"].get("tags", []))]
    children = [r for r in runs if as_dict(r["data"].get("tags", [])).get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent["info"]["run_id"] == outcome.parent_run_id and parent["info"]["status"] == "FINISHED"
    parent_params = as_dict(parent["data"]["params"])
    assert parent_params["search.optim.lr"] == "loguniform(1e-06, 0.01)"
    assert as_dict(parent["data"]["metrics"])["best/val/mean/acc"] == pytest.approx(best.best)
    commit = subprocess.run(
        ["git", "-C", str(SPACES.parent), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    statuses, run_of = {}, {}
    for child in children:
        tags = as_dict(child["data"]["tags"])
        params = as_dict(child["data"]["params"])
        metrics = as_dict(child["data"]["metrics"])
        trial = records[tags["imascl.trial_id"]]
        assert tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert tags["imascl.space"] == str(space.path) and tags["imascl.git_commit"] == commit
        assert float(params["optim.lr"]) == pytest.approx(trial.params["optim.lr"])  # the full config
        assert float(params["searched.loss.tau"]) == pytest.approx(trial.params["loss.tau"])
        assert params["data.pair_set"] == trial.params["data.pair_set"]
        assert {"train/loss", "val/mean/acc", "train/lr"} <= set(metrics)
        history = rest(
            mlflow_server, "metrics/get-history", run_id=child["info"]["run_id"], metric_key="val/mean/acc"
        )["metrics"]
        assert sorted(point["step"] for point in history)[:2] == [4, 8]
        statuses[trial.trial_id] = (child["info"]["status"], tags.get("imascl.stopped_early"))
        if trial.status == results.FINISHED:
            assert metrics["local/mean/acc"] == pytest.approx(trial.evaluation["local/mean/acc"])
            assert logged_model_of(mlflow_server, child["info"]["run_id"]) is not None  # its MLflow model
        run_of[trial.trial_id] = child["info"]["run_id"]
    assert statuses[first.trial_id] == ("FINISHED", None)
    assert statuses[second.trial_id] == ("KILLED", "true")

    # The best trial's model is version 1 of the space's registered model (default: imascl-<space name>).
    version = MlflowClient(tracking_uri=mlflow_server).get_model_version("imascl-smoke", "1")
    assert version.run_id == run_of[best.trial_id]
    assert version.tags["imascl.trial_id"] == best.trial_id
    assert version.tags["imascl.sweep"] == outcome.directory.name
    assert float(version.tags["val/mean/acc"]) == pytest.approx(best.best, abs=1e-4)


def test_a_sweep_whose_every_trial_fails_lists_the_errors_and_exits_1(ray_cluster, assets, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from imascl_ray import cli

    # Each trial fails in its own preparation (too few pairs to mine that many hard negatives).
    code = cli.main(
        [
            "tune",
            "smoke",
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            f"tracking.output_dir={tmp_path}",
            "loss.name=hard_negatives",
            "loss.hard_negatives=5000",
            "--num-samples",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "every trial failed" in out
    assert out.count("too few for 5000 negatives") >= 2  # in the table and the list of failures
    sweep = next((tmp_path / "sweeps").glob("smoke-*"))
    assert not (sweep / "best-config.yaml").exists()
    state = json.loads((sweep / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=state["mlflow_uri"])
    assert client.get_run(state["parent_run_id"]).info.status == "FAILED"
    children = client.search_runs(
        [client.get_run(state["parent_run_id"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{state['parent_run_id']}'",
    )
    assert len(children) == 2 and {run.info.status for run in children} == {"FAILED"}
