"""``imascl-ray tune SPACE.yaml [--num-samples N] [--resume PATH] [--address ...] [key=value ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "tune"
HELP = "Search hyperparameters with Ray Tune + Optuna (SPACE: a tune_spaces/*.yaml file or its name)."

SPACES_FOLDER = "tune_spaces"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """SPACE, overrides, the sample count, resume, and where the Ray cluster is."""
    parser.add_argument(
        "space", nargs="?", help="search-space YAML, or a name in tune_spaces/: smoke, quickstart, paper, ..."
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="fix config keys on top of the space's base (a searched key given here is no longer searched)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=None, help="trials to run (grid: repeats of the grid)"
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue the sweep in this folder (printed when it started) after its driver died",
    )
    parser.add_argument(
        "--register-as",
        metavar="NAME",
        default=None,
        help="registered model the best trial becomes a new version of (same as tracking.register_as=NAME; "
        "default: the space file's tracking.register_as, else imascl-<space name>)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto' inside `ray job submit`); default: a local cluster of its own",
    )


def resolve_space(name_or_path: str) -> Path:
    """A space file as given, or ``tune_spaces/<name>.yaml`` in the current folder or among the spaces
    installed with the package (``imascl_ray/tune_spaces``, package data: a wheel install has them)."""
    from imascl_ray.errors import InputError

    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    folders = [Path.cwd() / SPACES_FOLDER, installed_spaces()]
    for folder in folders:
        if (folder / f"{stem}.yaml").is_file():
            return folder / f"{stem}.yaml"
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")})
    raise InputError(
        f"{name_or_path}: no such search-space file (known spaces: {', '.join(known) or 'none'})"
    )


def installed_spaces() -> Path:
    """The folder of the shipped spaces inside the installed package (in a source checkout, a link to
    the top-level ``tune_spaces/``)."""
    return Path(__file__).resolve().parents[1] / SPACES_FOLDER


def run(args: argparse.Namespace) -> int:
    """Check the space, start or join Ray, run (or resume) the sweep, print the table and the best."""
    import logging

    from imascl_ray.errors import InputError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.resume is None and args.space is None:
        raise InputError("give a search-space file (or --resume PATH to continue a sweep)")
    if args.resume is not None and (args.space is not None or args.overrides or args.num_samples is not None):
        raise InputError(
            "--resume PATH continues a sweep as it was started: give no space, overrides or --num-samples"
        )
    if args.num_samples is not None and args.num_samples < 1:
        raise InputError(f"--num-samples must be at least 1, got {args.num_samples}")

    from imascl_ray.train.session import ray_session
    from imascl_ray.tune.space import load_space

    if args.resume is not None:
        from imascl_ray.tune.sweep import load_sweep_space

        space = load_sweep_space(args.resume)  # checks the folder before Ray starts
    else:
        overrides = [
            *args.overrides,
            *([f"tracking.register_as={args.register_as}"] if args.register_as else []),
        ]
        space = load_space(resolve_space(args.space), overrides, num_samples=args.num_samples)
        from imascl_ray.commands.train import check_writable_folder

        check_writable_folder("tracking.output_dir", space.fixed.tracking.output_dir)  # before Ray starts
    with ray_session(args.address, space.fixed, **_local_cpus(args.address, space)):
        from imascl_ray.tune.sweep import resume_sweep, run_sweep

        outcome = resume_sweep(args.resume) if args.resume is not None else run_sweep(space)
    print(outcome.table)
    print()
    print(f"sweep: {outcome.directory}")
    if outcome.best is not None:
        print(f"best trial: {outcome.best.trial_id} ({space.metric} {outcome.best.best:.4f})")
        print(f"best config: {outcome.best_config}   (imascl-ray train {outcome.best_config})")
        print(f"best model: {outcome.best_model}")
    print(f"MLflow parent run {outcome.parent_run_id} in {outcome.mlflow_uri}")
    if outcome.all_failed:
        print("every trial failed", flush=True)
        return 1
    return 0


def _local_cpus(address: str | None, space) -> dict:
    """A local cluster advertises at least one trial's CPUs (its own CPU plus its workers')."""
    if address is not None:
        return {}
    import os

    return {"num_cpus": max(int(space.trial_resources()["CPU"] + 0.999), os.cpu_count() or 1)}
