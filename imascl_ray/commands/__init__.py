"""Sub-commands of the ``imascl-ray`` command line, one module each.

Every module here defines:

- ``NAME``: the sub-command (``imascl-ray NAME ...``);
- ``HELP``: one line for ``imascl-ray --help``;
- ``add_arguments(parser: argparse.ArgumentParser) -> None``;
- ``run(args: argparse.Namespace) -> int``: the exit code.

Modules must import cheaply at the top (no torch, ray or transformers): ``imascl-ray --help`` imports
all of them. Heavy imports go inside ``run``.
"""
