"""``imascl-ray config``: show a resolved run configuration, the recipes, or the configuration reference."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "Print a config as the run would see it (recipe or YAML + overrides), or the reference of all keys."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """An optional config and overrides; or --reference / --recipes."""
    parser.add_argument(
        "config", nargs="?", default=None, help="YAML config or recipe name (default: defaults)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument(
        "--reference", action="store_true", help="print every key with type, default, meaning"
    )
    parser.add_argument("--recipes", action="store_true", help="list the recipes shipped with the package")


def run(args: argparse.Namespace) -> int:
    """Validate and print; a bad key or value exits 2 with a message naming it."""
    import yaml

    from imascl_ray.config import load_config, recipe_names, reference_markdown, resolve_recipe, to_dict

    if args.reference:
        print(reference_markdown(), end="")
        return 0
    if args.recipes:
        print("\n".join(recipe_names()))
        return 0
    config = load_config(resolve_recipe(args.config) if args.config else None, args.overrides)
    print(yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), end="")
    return 0
