"""AdamW with linear warm-up then linear decay to zero (the authors' schedule has no warm-up)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over the parameters that require gradients (frozen embeddings are left out).

    The fused kernel is used where torch has one for the parameters' device (CPU and CUDA): on 2 CPU
    cores it takes 0.14 s a step for multilingual-e5-small's 118M parameters instead of 0.83 s for the
    default per-tensor loop (0.13 s instead of 0.19 s with the word embeddings frozen); it is also what
    the Hugging Face / sentence-transformers trainers use by default. Same update, same state dict.
    """
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    kwargs = {"lr": lr, "weight_decay": weight_decay, "betas": betas}
    if _fused_supported(trainable):
        return torch.optim.AdamW(trainable, fused=True, **kwargs)
    return torch.optim.AdamW(trainable, **kwargs)


def _fused_supported(parameters: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters: one device type that has the kernel,
    floating-point dtypes only."""
    devices = {p.device.type for p in parameters}
    return (
        len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in parameters)
    )


def linear_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate factor rising linearly over ``warmup_ratio * total_steps`` steps, then falling to 0.

    Step ``k`` (0-based, the step about to be taken) uses ``(k + 1) / warmup`` during warm-up and
    ``(total - k) / (total - warmup)`` after it, so the last step still learns and none has lr 0.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    warmup = round(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
