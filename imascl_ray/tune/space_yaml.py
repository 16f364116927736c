"""YAML nodes with their line numbers, for errors that name the file and line of a search space."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from imascl_ray.config import compose_yaml_file
from imascl_ray.errors import InputError


def compose(path: Path) -> yaml.Node:
    """The node tree of a space file (an error for an empty or unreadable one)."""
    root = compose_yaml_file(path, "search-space file")
    if root is None:
        raise InputError(f"{path}: empty search-space file")
    return root


def mapping_entries(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """``{key: (key node, value node)}`` of a mapping node; an error for another node. (A repeated key
    never gets here: :func:`compose`, the recipes' loader, refuses it at any depth with its line.)"""
    if not isinstance(node, yaml.MappingNode):
        raise InputError(f"{at(path, node)}: {what} must be a mapping of keys to values")
    return {str(key_node.value): (key_node, value_node) for key_node, value_node in node.value}


def node_value(node: yaml.Node) -> Any:
    """The Python value of a node, as ``yaml.safe_load`` reads it."""
    return yaml.safe_load(yaml.serialize(node))


def at(path: Path, node: yaml.Node) -> str:
    """``"<file>, line <n>"`` of a node."""
    return f"{path}, line {node.start_mark.line + 1}"


def at_node(where: str, node: yaml.Node) -> str:
    """``where`` (``"<file>, line <n>"``) moved to the line of ``node``."""
    return where.rsplit(", line ", 1)[0] + f", line {node.start_mark.line + 1}"


def closest(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def example(kind: str) -> str:
    """An example argument list of a distribution, for error messages."""
    return {
        "loguniform": "[1e-5, 1e-3]",
        "uniform": "[0.0, 1.0]",
        "int": "[16, 64, 16]",
        "choice": "[priority, average]",
        "grid": "[en-xx, all]",
    }[kind]


def number(value: Any, where: str) -> float:
    """A finite float from a YAML number or a string such as ``1e-5`` (YAML 1.1 reads that as a string);
    ``nan`` and ``inf`` (``.nan``, ``'inf'``...) are errors: no range or point is made of them."""
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(result):
        raise InputError(f"{where}: expected a finite number, got {value!r}")
    return result


def finite(value: Any) -> bool:
    """A finite int or float that is not a bool (a scheduler or resources setting)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
