"""``imascl-ray train CONFIG [key=value ...]``: one distributed soft-contrastive training run on Ray."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imascl_ray.config import Config

NAME = "train"
HELP = "Train a student with Ray Train workers (CONFIG: a YAML file or a shipped recipe name)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG, overrides, and where the Ray cluster is."""
    parser.add_argument("config", help="YAML config, or a recipe: quickstart, paper_cross_lingual, ...")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. loss.tau=0.05 optim.lr=1e-5")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto' inside `ray job submit`); default: a local cluster of its own",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run named by tracking.run_name from its last checkpoint (without it, a name "
        "that already has checkpoints is an error)",
    )


def check_inputs(config: Config) -> None:
    """The files a run reads exist, and its models are folders or hub ids, before Ray starts: a typo
    costs a second, not a cluster start, and leaves no run folder behind."""
    from pathlib import Path

    from imascl_ray.commands.eval import check_model_reference
    from imascl_ray.errors import InputError

    corpus = config.data.corpus
    if corpus != "gettext" and not corpus.startswith("hub:") and not Path(corpus).is_file():
        raise InputError(f"data.corpus: {corpus}: no such corpus file")
    for key, paths in (("data.exclude", config.data.exclude), ("eval.pairs", config.eval.pairs)):
        for path in paths:
            if not Path(path).is_file():
                raise InputError(f"{key}: {path}: no such file")
    for key, name in (("model.name", config.model.name), ("teacher.name", config.teacher.name)):
        if name is not None and not name.startswith("offline:"):
            try:
                check_model_reference(name)
            except InputError as error:
                raise InputError(f"{key}: {error}") from None


#: A run name: a folder name under ``<output_dir>/runs/`` and Ray's run name under its storage.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def check_run_name(name: str) -> None:
    """``tracking.run_name`` must be one plain folder name (no ``/``, ``..``, spaces or a leading dot)."""
    from imascl_ray.errors import InputError

    if not RUN_NAME.fullmatch(name):
        raise InputError(
            f"tracking.run_name: {name!r} is not a run name (it names a folder: letters, digits and "
            "'._+=-', starting with a letter or digit, at most 128 characters)"
        )


def check_writable_folder(key: str, folder: str) -> None:
    """``folder`` is, or can be made, a folder this process may write into: checked without writing."""
    import os
    from pathlib import Path

    from imascl_ray.errors import InputError

    path = Path(folder).expanduser().resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{key}: {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{key}: {folder}: {existing} may not be written by this user")


def check_run_folder(config: Config, *, resume: bool) -> None:
    """Before Ray starts (it takes seconds, then the run's checks came only after it): the run name is
    a folder name, the output folder (and a local Ray storage folder) may be written, and a named run
    that exists already is resumed only with ``--resume``."""
    from pathlib import Path

    from imascl_ray.train import run_names

    tracking = config.tracking
    check_writable_folder("tracking.output_dir", tracking.output_dir)
    if tracking.storage_path and "://" not in tracking.storage_path:
        check_writable_folder("tracking.storage_path", tracking.storage_path)
    if tracking.run_name is None:
        return  # a default name is new every time
    check_run_name(tracking.run_name)
    if not resume:
        output = Path(tracking.output_dir).resolve()
        storage = tracking.storage_path or str(output / "ray")
        run_names.check_new_run(tracking.run_name, storage, output / "runs" / tracking.run_name)


def run(args: argparse.Namespace) -> int:
    """Load the config, start or join Ray, train, and print where the model and the metrics are."""
    import json

    from imascl_ray.config import load_config, resolve_recipe
    from imascl_ray.errors import InputError
    from imascl_ray.tracking import redact_uri

    config = load_config(resolve_recipe(args.config), args.overrides)  # bad input stops before Ray starts
    if args.resume and not config.tracking.run_name:
        raise InputError("--resume needs the run's name: add tracking.run_name=NAME")
    check_inputs(config)
    check_run_folder(config, resume=args.resume)

    from imascl_ray.train.session import ray_session
    from imascl_ray.train.trainer import run_training

    with ray_session(args.address, config):
        outcome = run_training(config, resume=args.resume)
    print(f"best validation accuracy: {outcome.best_score:.4f}")
    print(f"model: {outcome.model_dir}")
    if outcome.evaluation:
        print(json.dumps(outcome.evaluation, indent=2))
    print(f"MLflow run {outcome.mlflow_run_id} in {redact_uri(outcome.mlflow_uri)}")
    return 0
