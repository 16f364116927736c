"""On a real local Ray cluster: a restarting MLflow server, a failed run, a reused run name.

The tests join the session's shared cluster with MLflow's own HTTP retries off
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, in the driver and the workers' runtime env): with them, a short
outage would be bridged inside one blocking request, and the test would not see whether training
survives a server that stays away longer than MLflow's retry budget.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fault_runs import train_with_fault
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer
from ray_nodes import joined

from imascl_ray.config import Config, dump_yaml, load_config
from imascl_ray.data import write_corpus
from imascl_ray.errors import InputError
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus
from imascl_ray.train.trainer import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster(shared_ray_address):
    """The session's cluster, joined with MLflow's own HTTP retries off in the driver and its workers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with joined(shared_ray_address, env_vars={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
            yield


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    return {
        "model": build_tiny_model(folder / "tiny", dropout=0.0),
        "corpus": write_corpus(synthetic_parallel_corpus(400), folder / "corpus.parquet"),
    }


def make_config(assets: dict[str, Path], output: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            f"model.name={assets['model']}",
            f"data.corpus={assets['corpus']}",
            "data.languages=[en,fr]",
            "data.pair_set=en-fr",
            "data.validation_pairs=50",
            "data.test_pairs=0",
            "model.max_length=16",
            "teacher.max_length=16",
            "schedule.global_batch_size=8",
            "scaling.num_workers=2",
            "scaling.cpus_per_worker=1",
            "eval.suite=none",
            f"tracking.output_dir={output}",
            *overrides,
        ],
    )


class Outage(threading.Thread):
    """Stops ``server`` once its store holds ``after`` metric values, starts it again ``for_s`` seconds
    later on the same port with the same store; records when it went down and when it answered again."""

    def __init__(self, server: MlflowServer, after: int, for_s: float) -> None:
        super().__init__(daemon=True)
        self.server, self.after, self.for_s = server, after, for_s
        self.down_at = self.up_at = None
        self.error: BaseException | None = None

    def metric_rows(self) -> int:
        with sqlite3.connect(self.server.folder / "mlflow.db", timeout=10) as db:
            return db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 600
            while self.metric_rows() < self.after:
                if time.monotonic() > deadline:
                    raise TimeoutError("no metrics reached the server")
                time.sleep(0.1)
            self.server.stop()
            self.down_at = time.time()
            time.sleep(self.for_s)
            self.server.start()
            self.up_at = time.time()
        except BaseException as error:
            self.error = error


def test_a_run_outlives_its_mlflow_server_restarting_and_the_server_gets_every_metric(
    ray_cluster, assets, tmp_path
):
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    try:
        steps = 120
        config = make_config(
            assets,
            tmp_path / "out",
            f"tracking.mlflow_uri={server.url}",
            f"schedule.max_steps={steps}",
            "schedule.log_every=1",
            f"schedule.eval_every={steps // 2}",
            "scaling.max_failures=0",  # a worker group that died of tracking would fail the run
        )
        outage = Outage(server, after=3, for_s=4.0)
        outage.start()
        outcome = run_training(config, run_name="outage")
        outage.join(timeout=180)
        assert outage.error is None and outage.up_at is not None, outage.error
        client = MlflowClient(tracking_uri=server.url)
        run = client.get_run(outcome.mlflow_run_id)
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(outcome.mlflow_run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(1, steps + 1))  # each step once: no restart
        during = [m.step for m in history if outage.down_at * 1000 <= m.timestamp <= outage.up_at * 1000]
        assert during, "some steps were logged while the server was away (and arrived later)"
        assert outcome.worker_summary["global_step"] == steps
    finally:
        server.stop()


def test_a_run_that_fails_ends_failed_in_mlflow(assets, tmp_path):
    """A worker dies at step 1 with no restarts allowed: ``imascl-ray train`` fails, its MLflow run FAILED.

    The fault is asked for in the environment of the ``imascl-ray train`` process, whose own local
    cluster's workers inherit it (engine/faults.py)."""
    recipe = tmp_path / "doomed.yaml"
    overrides = ("schedule.max_steps=4", "schedule.eval_every=2", "scaling.max_failures=0")
    dump_yaml(make_config(assets, tmp_path, *overrides, "tracking.run_name=doomed"), recipe)
    process = train_with_fault(recipe, tmp_path, at_step=1, rank=1)
    assert process.returncode != 0, process.stdout[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("imascl-ray").experiment_id])
    assert run.info.run_name == "doomed" and run.info.status == "FAILED"


def test_a_name_with_checkpoints_is_not_resumed_by_surprise_but_by_resume(ray_cluster, assets, tmp_path):
    common = ("schedule.max_steps=4", "schedule.eval_every=2", "schedule.log_every=1")
    first = run_training(make_config(assets, tmp_path, *common, "tracking.run_name=mine"))
    weights = (first.model_dir / "model.safetensors").read_bytes()
    with pytest.raises(InputError) as refused:
        run_training(make_config(assets, tmp_path, *common, "tracking.run_name=mine", "optim.lr=1e-2"))
    message = str(refused.value)
    assert "'mine'" in message and "--resume" in message and "tracking.run_name" in message
    assert "\n" not in message
    assert (first.model_dir / "model.safetensors").read_bytes() == weights  # nothing of it was touched
    # --resume continues it (6 steps now: 4 done, 2 more) and logs into the same MLflow run.
    resumed = run_training(
        make_config(
            assets,
            tmp_path,
            "schedule.max_steps=6",
            "schedule.eval_every=2",
            "schedule.log_every=1",
            "tracking.run_name=mine",
        ),
        resume=True,
    )
    assert resumed.mlflow_run_id == first.mlflow_run_id
    client = MlflowClient(tracking_uri=first.mlflow_uri)
    steps = [m.step for m in client.get_metric_history(first.mlflow_run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert client.get_run(first.mlflow_run_id).info.status == "FINISHED"
