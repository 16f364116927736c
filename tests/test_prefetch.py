"""Batch assembly a step ahead (engine/prefetch.py) changes nothing the steps see, and the optional step
timer (engine/timing.py) is free when off: the same batches, the same losses, the same resumed run."""

from __future__ import annotations

import shutil
import threading

import pytest

from imascl_ray.config import load_config
from imascl_ray.data import write_corpus
from imascl_ray.engine.loop import RankContext, TrainingLoop
from imascl_ray.engine.prefetch import prefetch_executor, prefetched
from imascl_ray.engine.timing import TIMING_ENV, NullTimer, StepTimer, step_timer
from imascl_ray.preparation import prepare_run
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus


def test_prefetched_gives_the_same_pairs_in_order_and_prepares_in_the_background():
    threads = []

    def prepare(item: int, step: int) -> tuple[int, int]:
        threads.append(threading.current_thread().name)
        return item * 10, step

    inline = list(prefetched(range(5), prepare, 7, None))
    assert inline == [(i, (i * 10, 7 + i)) for i in range(5)]
    assert set(threads) == {threading.current_thread().name}
    threads.clear()
    with prefetch_executor() as executor:
        assert list(prefetched(range(5), prepare, 7, executor)) == inline
    assert all(name.startswith("imascl-prefetch") for name in threads)


def test_prefetched_raises_at_the_item_that_failed():
    def prepare(item: int, step: int) -> int:
        if item == 2:
            raise ValueError("bad item")
        return item

    with prefetch_executor() as executor:
        pairs = prefetched(range(5), prepare, 0, executor)
        assert [next(pairs), next(pairs)] == [(0, 0), (1, 1)]
        with pytest.raises(ValueError, match="bad item"):
            next(pairs)


def test_the_timer_is_off_by_default_and_sums_phases_per_step():
    assert isinstance(step_timer({}), NullTimer) and step_timer({}).summary() == {}
    assert isinstance(step_timer({TIMING_ENV: "1"}), StepTimer)
    timer = StepTimer(warmup=1)
    for _ in range(3):
        timer.start_step()
        for _ in range(2):
            with timer.phase("forward"):
                pass
        timer.end_step()
    summary = timer.summary()
    assert summary["steps"] == 2 and summary["warmup_steps"] == 1 and len(summary["step_s"]) == 2
    assert summary["phases_count"] == {"forward": 2}
    assert 0 <= summary["phases_mean_s"]["forward"] <= summary["step_mean_s"]


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefetch")
    model = build_tiny_model(folder / "tiny", dropout=0.1)  # dropout on: the random state must match too
    corpus = write_corpus(synthetic_parallel_corpus(120), folder / "corpus.parquet")
    settings = [
        f"model.name={model}",
        f"data.corpus={corpus}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        "data.validation_pairs=20",
        "model.max_length=32",
        "teacher.max_length=32",
        "schedule.global_batch_size=16",
        "schedule.log_every=1",
        "schedule.eval_every=4",
        "optim.lr=1e-3",
        "eval.suite=none",
        f"tracking.output_dir={folder / 'out'}",
    ]
    return settings, prepare_run(load_config(None, settings), folder / "run")


def _run(overrides, *, prefetch: bool, resume_from=None, keep_at=None, tmp_path=None):
    """A loop's reports ``[(step, loss)]``, its batches' rows and its summary; ``keep_at``: copy that
    step's checkpoint."""
    settings, prepared = overrides
    steps = TrainingLoop(load_config(None, settings), prepared, RankContext(), lambda m, c: None)
    total = steps.plan.steps_per_epoch + 3  # across an epoch boundary
    config = load_config(None, [*settings, f"schedule.max_steps={total}"])
    reports, batches = [], []

    def report(metrics, checkpoint):
        reports.append((metrics["step"], metrics["train/loss"]))
        if checkpoint is not None and metrics["step"] == keep_at:
            shutil.copytree(checkpoint, tmp_path / "kept")

    loop = TrainingLoop(config, prepared, RankContext(resume_from=resume_from), report)
    loop.prefetch = prefetch
    step = loop.step
    loop.step = lambda batch, inputs=None: batches.append(list(batch.pair_indices)) or step(batch, inputs)
    return reports, batches, loop.run()


def test_prefetch_gives_the_same_batches_and_losses_and_resumes_exactly(overrides, tmp_path):
    inline_reports, inline_batches, _ = _run(overrides, prefetch=False)
    reports, batches, _ = _run(overrides, prefetch=True, keep_at=4, tmp_path=tmp_path)
    assert batches == inline_batches and len(batches) == len(reports) > 4
    assert reports == inline_reports  # bit for bit: the same inputs and the same random state
    resumed, _, _ = _run(overrides, prefetch=True, resume_from=tmp_path / "kept")
    assert resumed == inline_reports[4:]


def test_the_timed_loop_returns_its_phases_and_the_same_losses(overrides, monkeypatch):
    monkeypatch.delenv(TIMING_ENV, raising=False)  # untimed first, whatever the environment says
    reports, _, summary = _run(overrides, prefetch=True)
    assert "timing" not in summary
    monkeypatch.setenv(TIMING_ENV, "1")
    timed_reports, _, summary = _run(overrides, prefetch=True)
    timing = summary["timing"]
    assert timed_reports == reports
    steady = len(reports) - 1  # the first step is the warm-up
    assert timing["steps"] == steady == len(timing["step_s"]) and timing["prefetch"] is True
    for phase in ("next_batch", "forward", "gather", "loss", "backward", "optimizer", "report"):
        assert timing["phases_count"][phase] == steady, phase
    validations = len([step for step, _ in reports if step % 4 == 0 or step == len(reports)])
    assert timing["phases_count"]["checkpoint"] == timing["phases_count"]["validate"] == validations
    assert "assemble" not in timing["phases_count"]  # done ahead, in the background
    parts = sum(timing["phases_mean_s"].values()) - timing["phases_mean_s"]["validate"]
    assert parts <= timing["step_mean_s"] * 1.001
