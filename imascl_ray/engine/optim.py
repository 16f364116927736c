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
    """AdamW over the parameters that require gradients (frozen embeddings are left out)."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, betas=betas)


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
