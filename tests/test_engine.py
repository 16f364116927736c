"""The engine's pure parts: schedule, precision, finite-loss guard, and exact resume from a checkpoint."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from imascl_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from imascl_ray.engine.guards import NonFiniteLossError, check_finite
from imascl_ray.engine.optim import build_optimizer, linear_schedule
from imascl_ray.engine.precision import grad_scaler, resolve_precision


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
