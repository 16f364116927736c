"""Errors that mean "the user's input is wrong", as opposed to a bug.

The command line prints them as one clear line (no traceback) and exits with code 2. Their message
names the file, line or field at fault.
"""


class InputError(ValueError):
    """Bad input from the user: a file, a line in it, a config field or a command-line value."""
