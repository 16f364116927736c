"""Metrics into real sqlite MLflow stores: flat evaluation metrics into a new or an existing run, and
rank 0's metrics sink reached through a client that fails on purpose."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from imascl_ray.errors import InputError
from imascl_ray.tracking.client import call_with_retries
from imascl_ray.tracking.metrics import MetricsSink, log_metrics


class FlakyClient:
    """A real ``MlflowClient`` whose ``log_batch`` raises while ``down`` is set (a server away)."""

    def __init__(self, uri: str) -> None:
        self.real = MlflowClient(tracking_uri=uri)
        self.down = threading.Event()
        self.calls = 0

    def log_batch(self, run_id, metrics):
        self.calls += 1
        if self.down.is_set():
            raise MlflowException("API request failed: Connection refused (https://u:hunter2@host)")
        self.real.log_batch(run_id, metrics=metrics)


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("sink")).info.run_id
    return uri, run_id


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def test_metrics_logged_while_the_store_is_away_arrive_when_it_is_back(store, caplog):
    uri, run_id = store
    client = FlakyClient(uri)
    sink = MetricsSink(run_id, uri, client=client, first_backoff_s=0.05, max_backoff_s=0.2)
    sink.log({"train/loss": 1.0}, step=1)
    client.down.set()
    with caplog.at_level(logging.WARNING, logger="imascl_ray.tracking.metrics"):
        started = time.monotonic()
        for step in range(2, 12):
            sink.log({"train/loss": 1.0 / step, "bad": float("nan")}, step=step)
        assert time.monotonic() - started < 0.5  # logging never waits for the store
        time.sleep(0.5)
        client.down.clear()
        sink.close(timeout_s=10)
    assert history(uri, run_id, "train/loss") == [(step, 1.0 / step) for step in range(1, 12)]
    assert history(uri, run_id, "bad") == []
    assert client.calls > 3 and sink.dropped == 0 and sink.sent == 11
    away = [r for r in caplog.records if "could not log metrics" in r.getMessage()]
    assert len(away) == 1  # one warning however many tries failed
    assert "hunter2" not in caplog.text  # the error's URI is redacted


def test_metrics_the_store_never_takes_are_dropped_with_one_warning(store, caplog):
    uri, run_id = store
    client = FlakyClient(uri)
    client.down.set()
    sink = MetricsSink(run_id, uri, client=client, first_backoff_s=0.05, max_backoff_s=0.1)
    for step in range(5):
        sink.log({"a": float(step), "b": 2.0}, step=step)
    with caplog.at_level(logging.WARNING, logger="imascl_ray.tracking.metrics"):
        started = time.monotonic()
        sink.close(timeout_s=0.5)
        assert time.monotonic() - started < 2  # close gives up on time
    assert sink.dropped == 10 and sink.sent == 0
    assert len([r for r in caplog.records if "dropped 10 metric value(s)" in r.getMessage()]) == 1
    assert history(uri, run_id, "a") == []


def test_a_full_queue_drops_its_oldest_values(store):
    uri, run_id = store
    client = FlakyClient(uri)
    client.down.set()
    sink = MetricsSink(run_id, uri, client=client, max_buffered=5, first_backoff_s=0.05, max_backoff_s=0.05)
    for step in range(8):
        sink.log({"a": float(step)}, step=step)
    client.down.clear()
    sink.close(timeout_s=10)
    assert [step for step, _ in history(uri, run_id, "a")] == [3, 4, 5, 6, 7]
    assert sink.dropped == 3


class StallingClient(FlakyClient):
    """Its first ``log_batch`` waits until ``release`` is set, then fails: a batch held in flight."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.entered, self.release = threading.Event(), threading.Event()

    def log_batch(self, run_id, metrics):
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
            raise MlflowException("API request failed: Connection refused")
        super().log_batch(run_id, metrics)


def test_a_failed_batch_put_back_into_a_full_queue_drops_its_oldest_values_not_the_newest(store):
    # CI found it: a batch that failed was put back with ``extendleft`` into a full bounded deque,
    # which silently drops from the other end, the newest values.
    uri, run_id = store
    client = StallingClient(uri)
    sink = MetricsSink(run_id, uri, client=client, max_buffered=5, first_backoff_s=0.01, max_backoff_s=0.01)
    sink.log({"a": 0.0}, step=0)
    assert client.entered.wait(10)  # step 0 is in flight
    for step in range(1, 8):
        sink.log({"a": float(step)}, step=step)
    client.release.set()
    sink.close(timeout_s=10)
    assert [step for step, _ in history(uri, run_id, "a")] == [3, 4, 5, 6, 7]
    assert sink.dropped == 3 and sink.sent == 5


class SlowClient(FlakyClient):
    """A real client whose every ``log_batch`` takes ``delay_s`` (a slow server, a store being opened)."""

    def __init__(self, uri: str, delay_s: float) -> None:
        super().__init__(uri)
        self.delay_s = delay_s

    def log_batch(self, run_id, metrics):
        time.sleep(self.delay_s)
        super().log_batch(run_id, metrics)


def test_flush_waits_until_the_store_holds_every_queued_metric(store):
    # CI found it: a run interrupted right after its second checkpoint had none of its metrics stored
    # (the sink's first batch was still going out), so the resumed run's curve began at step 3.
    uri, run_id = store
    sink = MetricsSink(run_id, uri, client=SlowClient(uri, delay_s=0.3))
    for step in range(1, 5):
        sink.log({"a": float(step)}, step=step)
    assert sink.flush(timeout_s=10)
    assert [step for step, _ in history(uri, run_id, "a")] == [1, 2, 3, 4]  # before close
    sink.close(timeout_s=10)


def test_flush_returns_at_once_while_the_store_is_away_and_gives_up_on_time(store):
    uri, run_id = store
    client = FlakyClient(uri)
    client.down.set()
    sink = MetricsSink(run_id, uri, client=client, first_backoff_s=0.05, max_backoff_s=0.1)
    sink.log({"a": 1.0}, step=1)
    deadline = time.monotonic() + 10
    while sink.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert not sink.flush(timeout_s=30)  # known away: training does not wait
    assert time.monotonic() - started < 0.5
    slow = MetricsSink(run_id, uri, client=SlowClient(uri, delay_s=2.0))
    slow.log({"b": 1.0}, step=1)
    started = time.monotonic()
    assert not slow.flush(timeout_s=0.3)  # a slow store: bounded by the timeout
    assert time.monotonic() - started < 1.0
    client.down.clear()
    sink.close(timeout_s=10)
    slow.close(timeout_s=10)
    assert history(uri, run_id, "a") == [(1, 1.0)] and history(uri, run_id, "b") == [(1, 1.0)]


def test_call_with_retries_retries_until_success_and_gives_up_after_its_time():
    outcomes = iter([OSError("locked"), OSError("locked"), "done"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert call_with_retries(flaky, what="x", first_backoff_s=0.01) == "done"

    def always():
        raise OSError("database is locked")

    started = time.monotonic()
    with pytest.raises(OSError, match="locked"):
        call_with_retries(always, what="x", timeout_s=0.3, first_backoff_s=0.05, max_backoff_s=0.1)
    assert time.monotonic() - started < 1.0


def test_metrics_go_to_a_new_run_and_to_an_existing_one(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_metrics(
        {"tatoeba/fra-eng/acc": 0.95, "sts17/ko-ko/spearman": float("nan")},
        experiment="eval-test",
        run_name="m",
        tracking_uri=tracking_uri,
        tags={"imascl.eval.suite": "paper"},
    )
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    assert run.data.metrics == {"tatoeba/fra-eng/acc": 0.95}  # NaN is not logged
    assert run.data.tags["imascl.eval.suite"] == "paper"
    assert run.info.status == "FINISHED"

    log_metrics({"local/en-fr/acc": 0.5}, run_id=run_id, tracking_uri=tracking_uri)
    assert client.get_run(run_id).data.metrics == {"tatoeba/fra-eng/acc": 0.95, "local/en-fr/acc": 0.5}
    assert client.get_experiment_by_name("eval-test").experiment_id == run.info.experiment_id


def test_unknown_run_or_no_destination_is_an_input_error(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(InputError, match="not found"):
        log_metrics({"a": 1.0}, run_id="0" * 32, tracking_uri=tracking_uri)
    with pytest.raises(InputError):
        log_metrics({"a": 1.0}, tracking_uri=tracking_uri)
