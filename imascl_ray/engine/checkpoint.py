"""Everything a run needs to resume exactly: weights, optimiser, schedule, scaler, RNGs and data position.

A checkpoint folder holds ``model.safetensors`` (the student's weights, loadable without pickle),
``training_state.pt`` (optimiser, scheduler, grad scaler, the random-number generators of Python, NumPy
and torch, and the data position), and ``position.json`` (the same position, human-readable). The state
file is read with ``weights_only=True``: it holds tensors and plain Python values only.

A checkpoint that cannot be read (truncated, overwritten, from another model) is an
:class:`~imascl_ray.errors.InputError` naming the file: no restart of the worker group can cure it
(:mod:`imascl_ray.train.failures` stops the run at once).
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from imascl_ray.errors import InputError

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
POSITION_FILE = "position.json"
#: What reading a damaged or foreign ``training_state.pt`` raises (torch's zip reader, pickle, state dicts).
UNREADABLE_STATE = (OSError, RuntimeError, ValueError, EOFError, KeyError, TypeError, pickle.UnpicklingError)


def rng_states() -> dict[str, Any]:
    """The random-number generators' states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` saved."""
    random.setstate(_as_tuple(states["python"]))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    position: dict[str, int],
) -> Path:
    """Write a resumable checkpoint of the (unwrapped) ``model`` and its training state to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / MODEL_FILE))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_states(),
            "position": dict(position),
        },
        directory / STATE_FILE,
    )
    (directory / POSITION_FILE).write_text(json.dumps(position, indent=2) + "\n")
    return directory


def load_checkpoint(
    directory: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
) -> dict[str, int]:
    """Load what :func:`save_checkpoint` wrote into the given objects; returns the data position.

    Raises :class:`InputError` naming the file if the checkpoint cannot be read or does not fit."""
    directory = Path(directory)
    weights = directory / MODEL_FILE
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise unreadable(weights, error) from error
    if missing or unexpected:
        misfit = f"does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        raise unreadable(weights, misfit)
    try:
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        if restore_rng:
            restore_rng_states(state["rng"])
        return dict(state["position"])
    except UNREADABLE_STATE as error:
        raise unreadable(directory / STATE_FILE, error) from error


def unreadable(path: Path, reason: Exception | str) -> InputError:
    """The one line for a checkpoint file that cannot be resumed from, and what to do instead."""
    why = " ".join(str(reason).split())[:200] or type(reason).__name__
    return InputError(
        f"checkpoint file {path} cannot be read ({why}): the run cannot resume from it; start afresh "
        "under another tracking.run_name"
    )


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; a round trip through torch.save may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
