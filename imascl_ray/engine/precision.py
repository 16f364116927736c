"""Mixed precision: bf16 where the GPU supports it, fp16 with a gradient scaler otherwise, fp32 on CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``dtype`` None means plain float32 (no autocast)."""

    name: str
    dtype: torch.dtype | None

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
        return self.dtype == torch.float16


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """``auto`` | ``bf16`` | ``fp16`` | ``fp32`` -> a :class:`Precision` for ``device``.

    ``auto`` picks bf16 on GPUs that support it (Ampere and newer), fp16 on older GPUs, and fp32 on CPU
    (CPU autocast is slower than float32 for these models). An explicit ``fp16`` on CPU is an error.
    """
    if setting == "auto":
        if device.type != "cuda":
            return Precision("fp32", None)
        return (
            Precision("bf16", torch.bfloat16)
            if torch.cuda.is_bf16_supported()
            else Precision("fp16", torch.float16)
        )
    if setting == "fp32":
        return Precision("fp32", None)
    if setting == "bf16":
        return Precision("bf16", torch.bfloat16)
    if setting == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 mixed precision needs a CUDA device; use bf16 or fp32 on CPU")
        return Precision("fp16", torch.float16)
    raise ValueError(f"unknown precision {setting!r}; expected auto, bf16, fp16 or fp32")


@contextlib.contextmanager
def autocast(precision: Precision, device: torch.device) -> Iterator[None]:
    """Autocast to ``precision.dtype`` on ``device``, or nothing for fp32."""
    if precision.dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=precision.dtype):
        yield


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler:
    """A scaler that is enabled only for fp16 (a disabled scaler is a no-op with the same API)."""
    return torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler)


def optimizer_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """``scaler.step(optimizer)`` and ``scaler.update()``; False when the scaler skipped the step.

    Under fp16 the scaler skips the update of a step whose gradients hold inf/NaN and halves its scale:
    the caller must then not advance the learning-rate schedule (what Hugging Face's trainer and
    accelerate do), or every overflow would silently shorten the warm-up and the decay. Read through
    the public API: a skipped step is the one after which the scale went down.
    """
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale
