"""``imascl-ray quickstart [--out DIR]``: the offline main job (see :mod:`imascl_ray.train.quickstart`)."""

from __future__ import annotations

import argparse

NAME = "quickstart"
HELP = (
    "Offline demo on real data: train multilingual-e5-small on localisation pairs with 2 local Ray "
    "workers and compare held-out bitext accuracy before and after."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Where results go, and optional overrides of the quickstart recipe."""
    parser.add_argument("--out", default="imascl-quickstart", help="output folder (default %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="changes to the quickstart recipe")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")


def run(args: argparse.Namespace) -> int:
    """Run the quickstart and print its table."""
    from imascl_ray.train.quickstart import run_quickstart

    run_quickstart(args.out, args.overrides, args.address)
    return 0
