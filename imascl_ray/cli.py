"""The ``imascl-ray`` command line: finds the sub-commands in :mod:`imascl_ray.commands` and runs one.

Bad input (an :class:`~imascl_ray.errors.InputError`, or a path that does not exist, is not a folder or
may not be written) is one line on stderr and exit code 2, whatever the command; ``--debug`` (before or
after the command) or ``IMASCL_DEBUG=1`` shows the traceback instead, for bug reports. Ctrl-C and SIGTERM
(``ray job stop``) print ``interrupted`` and exit 130 and 143, after the command has closed what it had
open (:mod:`imascl_ray.interrupts`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from imascl_ray import __version__, commands
from imascl_ray.errors import InputError
from imascl_ray.interrupts import Interrupted, raise_on_signals
from imascl_ray.logs import configure_logging

PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
"""Operating-system errors that mean "this path is wrong", reported like an :class:`InputError`."""
DEBUG_VARIABLE = "IMASCL_DEBUG"


def discover_commands() -> dict[str, ModuleType]:
    """Import every module of :mod:`imascl_ray.commands` and index it by its ``NAME``."""
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found[module.NAME] = module
    return found


def build_parser(found: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per discovered command."""
    parser = argparse.ArgumentParser(
        prog="imascl-ray",
        description="Soft contrastive learning for multilingual sentence embeddings, with Ray.",
    )
    parser.add_argument("--version", action="version", version=f"imascl-ray {__version__}")
    debug_help = f"show the traceback of an input error (as {DEBUG_VARIABLE}=1 does)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    after_command = argparse.ArgumentParser(add_help=False)
    after_command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in found.items():
        command_parser = sub.add_parser(
            name, help=module.HELP, description=module.HELP, parents=[after_command]
        )
        module.add_arguments(command_parser)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides come after options too.

    argparse fills a command's positionals (``CONFIG key=value ...``) in one go, so in
    ``train quickstart --address auto loss.tau=0.05`` the override after the option would be an
    "unrecognised argument". Such leftovers that look like ``key=value`` join the command's overrides, in
    the order given; anything else is still a usage error.
    """
    args, leftover = parser.parse_known_args(argv)
    if leftover and hasattr(args, "overrides") and all(is_override(item) for item in leftover):
        args.overrides = [*args.overrides, *leftover]
    elif leftover:
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    return args


def is_override(item: str) -> bool:
    """``key=value`` as the commands take it (``loss.tau=0.05``), not an option such as ``--out=DIR``."""
    return "=" in item and not item.startswith("-")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``imascl-ray`` and ``python -m imascl_ray``; returns the exit code."""
    found = discover_commands()
    args = parse_arguments(build_parser(found), argv)
    configure_logging()
    raise_on_signals()
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        return int(found[args.command].run(args) or 0)
    except (InputError, *PATH_ERRORS) as error:
        if debug:
            raise
        print(f"imascl-ray {args.command}: error: {describe(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        signal_name = interrupt.signal_name if isinstance(interrupt, Interrupted) else "SIGINT"
        print(f"interrupted ({signal_name})", file=sys.stderr, flush=True)
        return interrupt.exit_code if isinstance(interrupt, Interrupted) else 130


def describe(error: Exception) -> str:
    """The error as one line: ``"<path>: No such file or directory"`` for a path error, the message else."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    else:
        text = str(error)
    return " ".join(text.split())
