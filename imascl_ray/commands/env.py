"""``imascl-ray env``: the versions of the stack and the devices seen, for bug reports."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

NAME = "env"
HELP = "Print the versions of Python, torch, Ray, transformers, mteb, MLflow and the devices seen."

PACKAGES = (
    "imascl-ray",
    "torch",
    "ray",
    "transformers",
    "sentence-transformers",
    "datasets",
    "mteb",
    "optuna",
    "mlflow",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``env`` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    """Print one ``name: version`` line per package, then the accelerator."""
    print(f"python: {platform.python_version()} ({platform.machine()})")
    for package in PACKAGES:
        try:
            version = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{package}: {version}")
    import torch

    if torch.cuda.is_available():
        print(f"device: cuda x{torch.cuda.device_count()} ({torch.cuda.get_device_name(0)})")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads)")
    return 0
