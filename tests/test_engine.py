"""The engine: schedule, precision and the grad scaler, finite-loss guard, exact resume from a checkpoint,
hard-negative texts, the fault hook, and the loop's one position counter (single rank, no Ray)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imascl_ray.config import load_config
from imascl_ray.data import Corpus, write_corpus
from imascl_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from imascl_ray.engine.faults import FAULT_AT_STEP, FAULT_RANK, marker_name
from imascl_ray.engine.guards import NonFiniteLossError, check_finite
from imascl_ray.engine.loop import RankContext, TrainingLoop
from imascl_ray.engine.negatives import HardNegativeTexts
from imascl_ray.engine.optim import build_optimizer, linear_schedule
from imascl_ray.engine.precision import grad_scaler, optimizer_step, resolve_precision
from imascl_ray.errors import InputError
from imascl_ray.preparation import prepare_run
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

ROOT = Path(__file__).resolve().parents[1]


def _learning_rates(total: int, warmup_ratio: float) -> list[float]:
    optimizer = build_optimizer(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = linear_schedule(optimizer, total_steps=total, warmup_ratio=warmup_ratio)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_linear_schedule_warms_up_then_decays_without_a_zero_step():
    assert _learning_rates(4, 0.0) == pytest.approx([1.0, 0.75, 0.5, 0.25])
    rates = _learning_rates(10, 0.2)
    assert rates[:2] == pytest.approx([0.5, 1.0])
    assert rates[2:] == pytest.approx([(10 - k) / 8 for k in range(2, 10)])
    assert min(rates) > 0


def test_frozen_parameters_stay_out_of_the_optimizer():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(model.parameters(), lr=1e-3)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 2


def test_the_fused_optimizer_takes_the_same_steps_as_plain_adamw():
    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    model.load_state_dict(reference.state_dict())
    optimizer = build_optimizer(model.parameters(), lr=1e-2, weight_decay=0.01)
    assert optimizer.defaults["fused"]  # the fast kernel on CPU
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01, fused=False, foreach=False)
    inputs = torch.randn(16, 5)
    for _ in range(5):
        for net, opt in ((model, optimizer), (reference, plain)):
            opt.zero_grad()
            net(inputs).pow(2).mean().backward()
            opt.step()
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_precision_choices_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16
    assert not grad_scaler(resolve_precision("bf16", cpu), cpu).is_enabled()
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_non_finite_loss_names_the_step_and_the_term():
    check_finite(3, {"loss": 1.0, "cross": 0.5})
    with pytest.raises(NonFiniteLossError, match=r"step 12: .*the bad term\(s\): mono"):
        check_finite(12, {"loss": 1.0, "cross": 0.5, "mono": float("inf")})
    with pytest.raises(NonFiniteLossError, match=r"loss=nan"):
        check_finite(13, {"loss": float("nan")})


def _train(model, optimizer, scheduler, steps: int) -> list[float]:
    """Steps with dropout and fresh random data, so the RNG state matters for the trajectory."""
    losses = []
    for _ in range(steps):
        x = torch.randn(8, 4) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def _fresh(seed: int = 0):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2))
    optimizer = build_optimizer(model.parameters(), lr=1e-2)
    return model, optimizer, linear_schedule(optimizer, total_steps=10, warmup_ratio=0.2)


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    uninterrupted = _train(*_fresh(), steps=10)

    model, optimizer, scheduler = _fresh()
    first_half = _train(model, optimizer, scheduler, steps=4)
    scaler = grad_scaler(resolve_precision("fp32", torch.device("cpu")), torch.device("cpu"))
    save_checkpoint(
        tmp_path / "ckpt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        position={"epoch": 0, "step": 4},
    )
    assert (tmp_path / "ckpt" / "model.safetensors").exists()

    model, optimizer, scheduler = _fresh(seed=123)  # a new process would start from other states
    position = load_checkpoint(
        tmp_path / "ckpt", model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
    )
    assert position == {"epoch": 0, "step": 4}
    second_half = _train(model, optimizer, scheduler, steps=6)
    assert first_half + second_half == uninterrupted


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    model, optimizer, scheduler = _fresh()
    scaler = grad_scaler(resolve_precision("fp32", torch.device("cpu")), torch.device("cpu"))
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        position={"epoch": 0, "step": 0},
    )
    with pytest.raises(ValueError, match="does not fit the model"):
        load_checkpoint(tmp_path, model=torch.nn.Linear(4, 2))


# ------------------------------------------------------------------------------------ fp16 grad scaler
def _overflowing_step(scaler, model, optimizer, scheduler, factor: float) -> bool:
    loss = model(torch.ones(2, 3)).sum() * factor
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    stepped = optimizer_step(scaler, optimizer)
    if stepped:
        scheduler.step()
    return stepped


def test_a_step_the_grad_scaler_skips_does_not_advance_the_schedule():
    """A forced overflow (inf gradients) on CPU: no update, the same learning rate next step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model.parameters(), lr=1.0)
    scheduler = linear_schedule(optimizer, total_steps=4)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in model.parameters()]
    assert not _overflowing_step(scaler, model, optimizer, scheduler, float("inf"))
    assert scaler.get_scale() == 2.0**9  # backed off
    assert scheduler.last_epoch == 0 and optimizer.param_groups[0]["lr"] == 1.0
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert _overflowing_step(scaler, model, optimizer, scheduler, 1.0)  # a finite step is taken
    assert scheduler.last_epoch == 1 and optimizer.param_groups[0]["lr"] == 0.75
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert _overflowing_step(disabled, model, optimizer, scheduler, 1.0)


# --------------------------------------------------------------------------------- hard-negative texts
def test_a_hard_negative_is_never_a_text_of_the_batch():
    """Mined rows that point at the pair itself, at a row whose target repeats a batch target, or at a
    target that is a batch source: skipped by text, the rest filled from the language pair."""
    sources = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "b5", "b6"]
    targets = ["x1", "x2", "x3", "x4", "X2", "a3", "y3", "y4", "y5", "y6"]  # X2 is x2, normalised
    corpus = Corpus.from_groups({"en-fr": (sources, targets)})
    batch, local = np.array([0, 1, 2, 3]), np.array([0, 1])
    mined = np.array([[0, 4, 5], [6, 4, 7]] + [[8, 9, 6]] * 8)
    negatives = HardNegativeTexts(corpus, mined, k=2, seed=0)
    picked = negatives.rows(batch, local, step=0)
    assert len(picked) == 4 and picked[2:] == [6, 7]  # row 1: its mined rows 6 and 7 (4 is x2)
    assert picked[0] not in (0, 1, 2, 3, 4, 5)  # row 0's mined rows are all batch texts: filled up
    batch_texts = {text.lower() for row in batch for text in (sources[row], targets[row])}
    assert not {targets[row].lower() for row in picked} & batch_texts
    assert len({targets[row] for row in picked[:2]}) == 2  # one pair's negatives differ
    assert negatives.texts(batch, local, step=0) == [targets[row] for row in picked]
    with pytest.raises(InputError, match=r"loss\.hard_negatives: en-fr has too few sentences"):
        HardNegativeTexts(corpus, mined, k=7, seed=0).rows(batch, local, step=0)


# ------------------------------------------------------------------------------------------ fault hook
def test_the_fault_hook_fires_once_from_the_environment(tmp_path):
    """It kills the process at the step and rank the environment names, once per run folder."""
    script = (
        "import sys; from pathlib import Path; from imascl_ray.engine.faults import maybe_fail\n"
        "for step in range(5): maybe_fail(step, int(sys.argv[1]), Path(sys.argv[2])); print(step, flush=True)"
    )

    def run(rank: int, **env: str):
        environment = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env}
        command = [sys.executable, "-c", script, str(rank), str(tmp_path)]
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)

    assert run(1).stdout.split() == ["0", "1", "2", "3", "4"]  # nothing asked
    assert run(0, **{FAULT_AT_STEP: "2"}).returncode == 0  # another rank (the default is rank 1)
    first = run(1, **{FAULT_AT_STEP: "2"})
    assert first.returncode == 1 and first.stdout.split() == ["0", "1"]
    assert (tmp_path / marker_name(2)).is_file()
    assert run(1, **{FAULT_AT_STEP: "2"}).returncode == 0  # the restarted worker gets past it
    assert run(0, **{FAULT_AT_STEP: "3", FAULT_RANK: "0"}).returncode == 1


# ------------------------------------------------------------------------------------- the loop itself
@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loop")
    model = build_tiny_model(folder / "tiny", dropout=0.0)
    corpus = write_corpus(synthetic_parallel_corpus(200), folder / "corpus.parquet")
    overrides = [
        f"model.name={model}",
        f"data.corpus={corpus}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        "data.validation_pairs=40",
        "model.max_length=32",
        "teacher.max_length=32",
        "schedule.global_batch_size=16",
        "scaling.num_workers=1",
        "eval.suite=none",
        f"tracking.output_dir={folder / 'out'}",
    ]
    config = load_config(None, overrides)
    return overrides, prepare_run(config, folder / "run")


def test_the_loop_runs_epochs_from_one_counter_and_resumes_mid_epoch(prepared_run, tmp_path):
    """Steps across an epoch boundary come from the global step alone; a checkpoint taken mid-epoch
    resumes at the next batch, with the same losses as the uninterrupted run."""
    overrides, prepared = prepared_run
    settings = ["optim.lr=1e-3", "schedule.log_every=1", "schedule.eval_every=4"]
    config = load_config(None, [*overrides, *settings])
    steps_per_epoch = TrainingLoop(config, prepared, RankContext(), lambda m, c: None).plan.steps_per_epoch
    total = steps_per_epoch + 3  # into the second epoch
    config = load_config(None, [*overrides, *settings, f"schedule.max_steps={total}"])
    reports = []
    loop = TrainingLoop(config, prepared, RankContext(), lambda m, c: reports.append((m, c)))
    assert loop.run()["global_step"] == total
    assert [m["step"] for m, _ in reports] == list(range(1, total + 1))
    assert [m["epoch"] for m, _ in reports] == [0] * steps_per_epoch + [1] * 3

    checkpoints = {}

    def keep(metrics, checkpoint):
        if checkpoint is not None and metrics["step"] == 4:
            checkpoints[4] = tmp_path / "ckpt"
            import shutil

            shutil.copytree(checkpoint, checkpoints[4])

    TrainingLoop(config, prepared, RankContext(), keep).run()
    resumed_reports = []
    resumed = TrainingLoop(
        config, prepared, RankContext(resume_from=checkpoints[4]), lambda m, c: resumed_reports.append(m)
    )
    assert resumed.position.global_step == 4
    resumed.run()
    expected = {m["step"]: m["train/loss"] for m, _ in reports}
    assert [m["step"] for m in resumed_reports] == list(range(5, total + 1))
    for metrics in resumed_reports:
        assert metrics["train/loss"] == pytest.approx(expected[metrics["step"]], rel=1e-6)


def test_an_overflowing_fp16_step_in_the_loop_keeps_the_learning_rate(prepared_run):
    """The loop's own step with an enabled (fp16-style) grad scaler on CPU and a forced overflow: one
    parameter's gradient is made infinite, so the scaler skips the update, and the schedule waits."""
    overrides, prepared = prepared_run
    config = load_config(None, [*overrides, "schedule.max_steps=10", "optim.lr=1e-3"])
    loop = TrainingLoop(config, prepared, RankContext(), lambda m, c: None)
    loop.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    parameters = [p for p in loop.student.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in parameters]
    overflow = parameters[-1].register_hook(lambda grad: grad * float("inf"))
    batch = next(loop.plan.batches(0))
    lr = loop.scheduler.get_last_lr()[0]
    terms, others, skipped = loop.step(batch)
    assert skipped and others["train/lr"] == lr and loop.scheduler.get_last_lr()[0] == lr
    assert all(torch.equal(p, q) for p, q in zip(parameters, before, strict=True))
    assert np.isfinite(terms["train/loss"]) and loop.scaler.get_scale() == 2.0**7
    overflow.remove()
    _, _, skipped = loop.step(batch)
    assert not skipped and loop.scheduler.get_last_lr()[0] < lr
