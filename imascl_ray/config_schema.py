"""Flat ``section.key`` values -> a tree of pydantic dataclasses, with errors naming where a value came from.

Nothing here knows the run's sections (:mod:`imascl_ray.config` declares them); this module does what a
typed config needs around pydantic:

- YAML is read as a node tree, so that every key keeps its file and line (:func:`read_yaml`), and
  ``section.key=value`` overrides are YAML values (:func:`parse_override`);
- pydantic checks and converts the types (:func:`validate_flat`); its first error, in the order the keys
  were given, becomes one :class:`~imascl_ray.errors.InputError` naming the origin (file and line, or
  the override), the key and the type it needs, or, for an unknown key, the closest known one;
- the docstring under each field (pydantic's ``use_attribute_docstrings``) is the field's description,
  from which the reference is generated (:func:`reference_markdown`).
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from imascl_ray.errors import InputError

SECTION_RULES = pydantic.ConfigDict(
    extra="forbid", use_attribute_docstrings=True, coerce_numbers_to_str=True, allow_inf_nan=False
)
"""Unknown keys are errors; the string under a field is its description; a number may be given for a str;
every float is finite (``nan`` and ``inf`` are no learning rate, temperature or weight)."""
_WHOLE_OR_FLAG = {"int": int, "bool": bool, "int | None": int | None, "bool | None": bool | None}
# Keyed by the annotation as written (a string under ``from __future__ import annotations``) and as a type.
STRICT = {
    key: typing.Annotated[hint, pydantic.Strict()]
    for spelled, hint in _WHOLE_OR_FLAG.items()
    for key in (spelled, hint)
}


def section_dataclass(cls: type) -> type:
    """``cls`` as a pydantic dataclass under :data:`SECTION_RULES`, strict for whole numbers and flags.

    pydantic's lax mode would take ``10.0`` (a uniform draw) as the int 10 and ``1`` as true; ints and
    bools are therefore :class:`pydantic.Strict`. Floats and strings stay lax: ``"3e-5"``, which YAML 1.1
    reads as a string, is a float, and ``7`` may be a name.
    """
    annotations = cls.__annotations__  # the class's own (every section declares fields)
    for name, annotation in annotations.items():
        if annotation in STRICT:
            annotations[name] = STRICT[annotation]
    return pydantic.dataclasses.dataclass(cls, config=SECTION_RULES)


def compose_yaml_file(path: Path, what: str = "config file") -> yaml.Node | None:
    """The YAML node tree of ``path`` (it keeps line numbers), None for an empty file; an unreadable,
    non-UTF-8 or invalid file, or one that repeats a key in a mapping (:func:`refuse_repeated_keys`), is
    an :class:`InputError` naming it. Recipes and search-space files are both read here."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {error}") from None
    if root is not None:
        refuse_repeated_keys(root, path)
    return root


def refuse_repeated_keys(root: yaml.Node, path: Path) -> None:
    """An :class:`InputError` naming the file and line of the first key repeated in one mapping, at any
    depth: YAML loaders keep the last value silently (and a repeated section would merge), so a typo
    or a pasted block would change a run without a word."""
    visited: set[int] = set()

    def walk(node: yaml.Node) -> None:  # in document order, so the first repeat in the file is named
        if id(node) in visited:  # an alias shares its anchor's node
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[tuple[str, Any], int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                    if key in first_line:
                        raise InputError(
                            f"{path}, line {line}: {key_node.value!r} appears twice in one mapping "
                            f"(first on line {first_line[key]}); keep one"
                        )
                    first_line[key] = line
                walk(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(root)


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat ``section.key`` values of a YAML file of sections and, for each key, ``"<file>, line <n>"``."""
    root = compose_yaml_file(path)
    if root is None:
        return {}, {}
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{path}, line {root.start_mark.line + 1}: a config is a mapping of sections")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            if isinstance(value_node, yaml.MappingNode) and not prefix:
                walk(value_node, f"{key}.")
                continue
            values[key] = yaml.safe_load(yaml.serialize(value_node))
            origins[key] = f"{path}, line {key_node.start_mark.line + 1}"

    walk(root, "")
    return values, origins


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.tau=0.05"`` -> ``("loss.tau", 0.05)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"override {text!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise InputError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return key.strip(), value


def validate_flat(
    root: type,
    values: Mapping[str, Any],
    origins: Mapping[str, str],
    retired: Mapping[str, str] | None = None,
) -> Any:
    """An instance of the pydantic dataclass ``root`` (whose fields are sections) from flat values.

    A string for a list field is split on commas (``data.languages=en,fr``). ``retired`` maps keys that
    no longer exist to what replaced them, for the message.
    """
    hints = field_types(root)
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if not dot:
            raise InputError(
                f"{origin(key, origins)}: {key!r} is not a section.key name{closest(key, hints)}"
            )
        if isinstance(value, str) and _is_sequence(hints.get(key)):
            value = [part.strip() for part in value.split(",") if part.strip()]
        nested.setdefault(section, {})[name] = value
    try:
        return _adapter(root).validate_python(nested)
    except pydantic.ValidationError as error:
        order = {key: index for index, key in enumerate(values)}
        first = min(error.errors(), key=lambda e: order.get(_error_key(e, values), len(order)))
        raise InputError(_explain(first, values, origins, hints, retired or {})) from None


def sections(root: type) -> dict[str, type]:
    """``{"model": ModelConfig, ...}``: the sections of ``root`` in declaration order."""
    return {name: info.annotation for name, info in root.__pydantic_fields__.items()}  # type: ignore[attr-defined]


@functools.cache
def field_types(root: type) -> dict[str, Any]:
    """``{"loss.tau": float, ...}`` for every key of ``root``, in declaration order."""
    return {
        f"{section}.{name}": info.annotation
        for section, section_type in sections(root).items()
        for name, info in section_type.__pydantic_fields__.items()  # type: ignore[attr-defined]
    }


def field_docs(root: type) -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, description)`` for every field; the description is the field's docstring."""
    rows = []
    for section, section_type in sections(root).items():
        defaults = section_type()
        for name, info in section_type.__pydantic_fields__.items():  # type: ignore[attr-defined]
            doc = " ".join((info.description or "").split())
            rows.append((f"{section}.{name}", type_name(info.annotation), getattr(defaults, name), doc))
    return rows


def reference_markdown(root: type) -> str:
    """A Markdown table per section of ``root``: key, type, default, meaning."""
    lines: list[str] = []
    current = None
    for key, kind, default, doc in field_docs(root):
        section = key.split(".")[0]
        if section != current:
            current = section
            section_doc = (sections(root)[section].__doc__ or "").strip()
            lines += [
                "",
                f"**{section}**: {section_doc}",
                "",
                "| key | type | default | meaning |",
                "|---|---|---|---|",
            ]
        shown = "null" if default is None else yaml.safe_dump(plain(default), default_flow_style=True).strip()
        shown = shown.removesuffix("...").strip()
        lines.append(f"| `{key}` | {kind.replace('|', '/')} | `{shown}` | {doc} |")
    return "\n".join(lines).strip() + "\n"


def flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_dict(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def plain(value: Any) -> Any:
    """``value`` with tuples made lists, recursively (YAML/JSON-safe)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def type_name(hint: Any) -> str:
    """A type as the reference shows it: ``int``, ``str | null``, ``'mean' | 'cls'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def origin(key: str, origins: Mapping[str, str]) -> str:
    """Where ``key``'s value came from (``"run.yaml, line 3"``, ``"command line (...)"``), else ``config``."""
    return origins.get(key, "config")


def closest(key: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'loss.tau'?)`` for the closest known key, or nothing."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@functools.cache
def _adapter(root: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(root)


def _is_sequence(hint: Any) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(option) in (list, tuple) for option in options)


def _error_key(error: Mapping[str, Any], values: Mapping[str, Any]) -> str:
    """The ``section.key`` a pydantic error is about (for an unknown section: its first key given)."""
    loc = [str(part) for part in error["loc"]]
    if len(loc) == 1:
        return next((key for key in values if key.startswith(f"{loc[0]}.")), loc[0])
    return f"{loc[0]}.{loc[1]}"


def _explain(
    error: Mapping[str, Any],
    values: Mapping[str, Any],
    origins: Mapping[str, str],
    hints: Mapping[str, Any],
    retired: Mapping[str, str],
) -> str:
    """One line for a pydantic error: where, which key, and what it must be."""
    key = _error_key(error, values)
    where = origin(key, origins)
    if error["type"] == "unexpected_keyword_argument":
        if key in retired:  # a retired key may be the last of a retired section (debug.fail_at_step)
            return f"{where}: {key} is gone; use {retired[key]}"
        if len(error["loc"]) == 1:
            return f"{where}: unknown section {key.partition('.')[0]!r}{closest(key, hints)}"
        return f"{where}: unknown key {key!r}{closest(key, hints)}"
    hint, value = hints.get(key), values.get(key, error.get("input"))
    if error["type"] == "finite_number":
        return f"{where}: {key} must be a finite number, got {value!r}"
    if typing.get_origin(hint) is Literal:
        return f"{where}: {key} must be one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}"
    return f"{where}: {key} must be {type_name(hint)}, got {value!r} ({type(value).__name__})"
