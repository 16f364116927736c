"""Search-space files (``tune_spaces/*.yaml``): read and checked before any trial starts.

A space file names a base recipe, fixed overrides, and the config keys to search, each with one
distribution; plus the metric, the number of samples, the scheduler and the resources of a trial.
``tune_spaces/README.md`` documents the schema; :mod:`imascl_ray.tune.search_space` holds what a file
becomes (a :class:`SearchSpace` whose parameters are Ray Tune domains). Reading needs no Ray, so a bad
file fails fast and the checks are unit-tested without a cluster.

Every error names the file and line (or the key) at fault: an unknown key (with the closest known
one), a distribution that does not exist, an empty or reversed range, a value of the wrong type for
its config key, a pair-set name that does not parse. (A pair set the *corpus* lacks is found when the
sweep splits the corpus for its shared teacher cache, still before any trial starts.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from imascl_ray.config import (
    Config,
    flatten,
    from_flat,
    load_config,
    parse_override,
    resolve_recipe,
)
from imascl_ray.errors import InputError
from imascl_ray.tune.search_space import (
    DISTRIBUTIONS,
    NOT_SEARCHABLE,
    SCORE,
    Parameter,
    SchedulerSettings,
    SearchSpace,
    absolute_paths,
    max_concurrent_trials,
    same,
    show,
    space_to_dict,
)
from imascl_ray.tune.space_yaml import (
    at,
    at_node,
    closest,
    compose,
    example,
    finite,
    is_int,
    mapping_entries,
    node_value,
    number,
)

__all__ = [
    "NOT_SEARCHABLE",
    "SCORE",
    "Parameter",
    "SearchSpace",
    "absolute_paths",
    "load_space",
    "max_concurrent_trials",
    "space_to_dict",
]

TOP_LEVEL_KEYS = (
    "name",
    "base",
    "overrides",
    "search",
    "metric",
    "mode",
    "num_samples",
    "seed",
    "max_concurrent_trials",
    "points_to_evaluate",
    "scheduler",
    "resources",
)
SCHEDULER_KEYS = ("name", "time_attr", "grace_period", "max_t", "reduction_factor")
RESOURCE_KEYS = ("trial_cpus",)


# ---------------------------------------------------------------------------------------------------------
# Reading


def load_space(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    num_samples: int | None = None,
    base_dir: str | Path | None = None,
    cwd: str | Path | None = None,
) -> SearchSpace:
    """Read and check a space file; ``overrides`` (``key=value``) fix config keys on top of it.

    An override of a searched key pins it: that key is no longer searched. ``num_samples`` replaces the
    file's. ``base_dir`` is where a relative ``base:`` path is looked up (default: the file's folder;
    a resumed sweep reads its saved copy of the file and passes the original folder). Relative paths in
    the config (output folder, corpus, model folders, pair files) are made absolute against ``cwd``
    (default: the current folder), since Tune runs each trial in a folder of its own.
    """
    path = Path(path)
    root = compose(path)
    base_dir = Path(base_dir) if base_dir is not None else path.parent
    entries = mapping_entries(root, path, "a search space")
    for key, (key_node, _) in entries.items():
        if key not in TOP_LEVEL_KEYS:
            raise InputError(f"{at(path, key_node)}: unknown key {key!r}{closest(key, TOP_LEVEL_KEYS)}")
    if "search" not in entries:
        raise InputError(f"{path}: no 'search' section: name at least one config key to search")

    # The fixed config: base recipe, then the space's overrides, then the command line.
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    base_node = entries.get("base", (None, None))[1]
    base = node_value(base_node) if base_node is not None else None
    if base is not None:
        if not isinstance(base, str):
            raise InputError(f"{at(path, base_node)}: base must be a recipe name or a YAML path")
        candidate = base_dir / base
        try:
            base_path = candidate if candidate.is_file() else resolve_recipe(base)
        except InputError as error:
            raise InputError(f"{at(path, base_node)}: base: {error}") from None
        values = flatten(load_config(base_path))
    else:
        values = flatten(Config())
    if "overrides" in entries:
        for key, (value, where) in _flat_overrides(entries["overrides"][1], path).items():
            values[key], origins[key] = value, where
    command_line = {}
    for text in overrides:
        key, value = parse_override(text)
        command_line[key] = value
        values[key], origins[key] = value, f"command line ({text})"
    fixed = absolute_paths(from_flat(values, origins), Path(cwd) if cwd is not None else Path.cwd())

    # The searched parameters, each checked against the fixed config.
    search_node = entries["search"][1]
    parameters: dict[str, Parameter] = {}
    for key, (key_node, value_node) in mapping_entries(search_node, path, "'search'").items():
        where = at(path, key_node)
        if key in origins and not origins[key].startswith("command line"):
            raise InputError(f"{where}: {key} is both searched and fixed ({origins[key]})")
        parameters[key] = _parse_parameter(key, value_node, where)
    if not parameters:
        raise InputError(f"{at(path, search_node)}: 'search' names no config key")
    pinned = {key: fixed_value for key, fixed_value in command_line.items() if key in parameters}
    for key in pinned:
        del parameters[key]
    if not parameters:
        raise InputError(f"{path}: the command line fixes every searched key; nothing is left to search")
    for parameter in parameters.values():
        _check_searchable(parameter, fixed)
        _check_values(parameter, fixed)
    if "data.pair_set" not in parameters and "data.languages" not in parameters:
        from imascl_ray.data import resolve_pair_set

        try:
            resolve_pair_set(fixed.data.pair_set, fixed.data.languages)
        except InputError as error:
            where = origins.get("data.pair_set", origins.get("data.languages", str(path)))
            raise InputError(f"{where}: data.pair_set={fixed.data.pair_set}: {error}") from None

    def setting(name: str, default: Any) -> tuple[Any, str]:
        if name not in entries:
            return default, str(path)
        return node_value(entries[name][1]), at(path, entries[name][0])

    metric, where = setting("metric", SCORE)
    if not isinstance(metric, str) or not (metric.startswith("val/") or metric == "train/loss"):
        raise InputError(
            f"{where}: metric must be a validation metric the training loop reports "
            f"({SCORE}, val/<pair>/acc, val/best) or train/loss, got {metric!r}"
        )
    mode, where = setting("mode", "min" if metric == "train/loss" else "max")
    if mode not in ("max", "min"):
        raise InputError(f"{where}: mode must be max or min, got {mode!r}")
    samples, where = setting("num_samples", 1 if any(p.kind == "grid" for p in parameters.values()) else 10)
    if num_samples is not None:
        samples, where = num_samples, "--num-samples"
    if not is_int(samples) or samples < 1:
        raise InputError(f"{where}: num_samples must be a positive integer, got {samples!r}")
    seed, where = setting("seed", 0)
    if not is_int(seed):
        raise InputError(f"{where}: seed must be an integer, got {seed!r}")
    concurrency, where = setting("max_concurrent_trials", "auto")
    if concurrency == "auto":
        concurrency = None
    elif not is_int(concurrency) or concurrency < 1:
        raise InputError(f"{where}: max_concurrent_trials must be 'auto' or a positive integer")
    name, where = setting("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise InputError(f"{where}: name must be a word (no '/'), got {name!r}")

    return SearchSpace(
        path=path,
        name=name.strip(),
        fixed=fixed,
        parameters=parameters,
        metric=metric,
        mode=mode,
        num_samples=int(samples),
        seed=int(seed),
        max_concurrent_trials=concurrency,
        points_to_evaluate=_parse_points(entries.get("points_to_evaluate"), path, parameters, set(pinned)),
        scheduler=_parse_scheduler(entries.get("scheduler"), path, fixed, parameters),
        trial_cpus=_parse_resources(entries.get("resources"), path),
        pinned=pinned,
        overrides=tuple(overrides),
    )


def _parse_parameter(key: str, node: yaml.Node, where: str) -> Parameter:
    hint = "a distribution such as {loguniform: [1e-5, 1e-3]} or {choice: [priority, average]}"
    if not isinstance(node, yaml.MappingNode):
        raise InputError(
            f"{where}: {key} needs {hint} (a fixed value belongs under 'overrides'), got {node_value(node)!r}"
        )
    if len(node.value) != 1:
        raise InputError(f"{where}: {key} needs exactly one distribution, e.g. {hint}")
    kind_node, args_node = node.value[0]
    kind, args = kind_node.value, node_value(args_node)
    where = at_node(where, kind_node)
    if kind not in DISTRIBUTIONS:
        raise InputError(
            f"{where}: {key}: unknown distribution {kind!r}{closest(kind, DISTRIBUTIONS)} "
            f"(known: {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(args, list):
        raise InputError(f"{where}: {key}: {kind} takes a list, e.g. {kind}: {example(kind)}")
    if kind in ("choice", "grid"):
        if not args:
            raise InputError(f"{where}: {key}: empty {kind}: give at least one value")
        for value in args:
            if isinstance(value, (list, dict)):
                raise InputError(
                    f"{where}: {key}: {kind} values must be single values (name a set, e.g. a pair-set "
                    f"name such as en-xx+fr-xx, or a comma-separated list as one string), got {value!r}"
                )
        for first, second in itertools.combinations(args, 2):
            if same(first, second):
                raise InputError(f"{where}: {key}: {kind} lists {first!r} twice")
        return Parameter(key, kind, tuple(args), where)
    if kind == "int":
        if len(args) not in (2, 3) or not all(is_int(v) for v in args):
            raise InputError(f"{where}: {key}: int takes [low, high] or [low, high, step], integers")
        low, high, step = (*args, 1)[:3]
        if step < 1:
            raise InputError(f"{where}: {key}: int step must be at least 1, got {step}")
        if low >= high:
            raise InputError(f"{where}: {key}: empty range [{low}, {high}]: low must be below high")
        if (high - low) % step:
            raise InputError(f"{where}: {key}: int range [{low}, {high}] is not whole steps of {step}")
        return Parameter(key, kind, (low, high, step), where)
    if len(args) != 2:
        raise InputError(f"{where}: {key}: {kind} takes [low, high], e.g. {kind}: {example(kind)}")
    low, high = (number(v, f"{where}: {key}: {kind}") for v in args)
    if low >= high:
        raise InputError(f"{where}: {key}: empty range [{show(low)}, {show(high)}]: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise InputError(f"{where}: {key}: loguniform needs a positive low end, got {show(low)}")
    return Parameter(key, kind, (low, high), where)


def _check_searchable(parameter: Parameter, fixed: Config) -> None:
    key = parameter.key
    for prefix, reason in NOT_SEARCHABLE.items():
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            raise InputError(f"{parameter.where}: {key} cannot be searched: {reason}")
    if key == "model.name" and fixed.teacher.name is None:
        raise InputError(
            f"{parameter.where}: model.name can only be searched with a fixed teacher.name (the teacher "
            "defaults to the student, and the trials share one teacher cache)"
        )
    if key.startswith("data.") and not parameter.categorical:
        raise InputError(
            f"{parameter.where}: {key} must be a choice or a grid: the sweep builds one teacher cache "
            "over every training set its data values allow"
        )


def _check_values(parameter: Parameter, fixed: Config) -> None:
    """Every value (or the ends of a range) must make a valid config, checked by the config module."""
    from imascl_ray.data import resolve_pair_set

    base = flatten(fixed)
    for value in parameter.values():
        try:
            config = from_flat({**base, parameter.key: value}, {parameter.key: parameter.where})
            if parameter.key in ("data.pair_set", "data.languages"):
                resolve_pair_set(config.data.pair_set, config.data.languages)
        except InputError as error:
            message = str(error)
            if message.startswith(parameter.where):
                raise
            raise InputError(f"{parameter.where}: {parameter.key}={show(value)}: {message}") from None


def _parse_points(
    entry: tuple[yaml.Node, yaml.Node] | None, path: Path, parameters: dict[str, Parameter], pinned: set[str]
) -> list[dict[str, Any]]:
    """The points to run first; a key the command line pinned is left out of them."""
    if entry is None:
        return []
    key_node, node = entry
    if not isinstance(node, yaml.SequenceNode):
        raise InputError(f"{at(path, key_node)}: points_to_evaluate is a list of {{key: value}} mappings")
    points = []
    for item in node.value:
        point = {}
        for key, (point_key_node, value_node) in mapping_entries(item, path, "a point").items():
            where = at(path, point_key_node)
            value = node_value(value_node)
            if key in pinned:
                continue
            if key not in parameters:
                raise InputError(
                    f"{where}: points_to_evaluate: {key!r} is not a searched key"
                    f"{closest(key, list(parameters))}"
                )
            if parameters[key].kind != "int" and not parameters[key].categorical and isinstance(value, str):
                value = number(value, f"{where}: points_to_evaluate: {key}")
            if not parameters[key].contains(value):
                raise InputError(
                    f"{where}: points_to_evaluate: {key}={show(value)} is outside "
                    f"{parameters[key].describe()}"
                )
            point[key] = value
        points.append(point)
    return points


def _parse_scheduler(
    entry: tuple[yaml.Node, yaml.Node] | None, path: Path, fixed: Config, parameters: dict[str, Parameter]
) -> SchedulerSettings:
    settings: dict[str, Any] = {}
    where: dict[str, str] = {}
    if entry is not None:
        for key, (key_node, value_node) in mapping_entries(entry[1], path, "'scheduler'").items():
            if key not in SCHEDULER_KEYS:
                raise InputError(
                    f"{at(path, key_node)}: unknown scheduler key {key!r}{closest(key, SCHEDULER_KEYS)}"
                )
            settings[key], where[key] = node_value(value_node), at(path, key_node)
    name = settings.get("name", "asha")
    if name not in ("asha", "fifo"):
        raise InputError(f"{where.get('name', path)}: scheduler name must be asha or fifo, got {name!r}")
    if name == "fifo":
        return SchedulerSettings(name="fifo")
    time_attr = settings.get("time_attr", "step")
    if time_attr not in ("step", "training_iteration"):
        raise InputError(f"{where['time_attr']}: scheduler time_attr must be step or training_iteration")
    steps_searched = "schedule.max_steps" in parameters
    max_t = settings.get("max_t", None if steps_searched else fixed.schedule.max_steps)
    if max_t is None:
        raise InputError(
            f"{where.get('max_t', path)}: scheduler max_t is needed for ASHA when schedule.max_steps is "
            "not fixed (the most steps, or validations with time_attr training_iteration, a trial may run)"
        )
    grace = settings.get("grace_period", min(fixed.schedule.eval_every, max_t) if time_attr == "step" else 1)
    factor = settings.get("reduction_factor", 2)
    if not is_int(max_t) or max_t < 1:
        raise InputError(f"{where.get('max_t', path)}: scheduler max_t must be a positive integer")
    if not is_int(grace) or not 1 <= grace <= max_t:
        raise InputError(
            f"{where.get('grace_period', path)}: scheduler grace_period must be an integer in "
            f"[1, max_t={max_t}]"
        )
    if not finite(factor) or factor <= 1:
        raise InputError(
            f"{where.get('reduction_factor', path)}: scheduler reduction_factor must exceed 1 (a finite "
            f"number), got {factor!r}"
        )
    return SchedulerSettings("asha", time_attr, int(grace), int(max_t), float(factor))


def _parse_resources(entry: tuple[yaml.Node, yaml.Node] | None, path: Path) -> float:
    if entry is None:
        return 1.0
    trial_cpus = 1.0
    for key, (key_node, value_node) in mapping_entries(entry[1], path, "'resources'").items():
        where = at(path, key_node)
        if key not in RESOURCE_KEYS:
            raise InputError(
                f"{where}: unknown resources key {key!r}{closest(key, RESOURCE_KEYS)} (the workers' "
                "resources are scaling.num_workers, scaling.cpus_per_worker and scaling.use_gpu, "
                "set under 'overrides')"
            )
        value = node_value(value_node)
        if not finite(value) or value < 0:
            raise InputError(f"{where}: resources trial_cpus must be a finite number >= 0, got {value!r}")
        trial_cpus = float(value)
    return trial_cpus


def _flat_overrides(node: yaml.Node, path: Path) -> dict[str, tuple[Any, str]]:
    """``overrides:`` as ``{"section.key": (value, "file, line n")}``: sections nested or dotted keys."""
    flat: dict[str, tuple[Any, str]] = {}
    for key, (key_node, value_node) in mapping_entries(node, path, "'overrides'").items():
        if "." not in key and isinstance(value_node, yaml.MappingNode):
            for name, (name_node, inner) in mapping_entries(value_node, path, f"'{key}'").items():
                flat[f"{key}.{name}"] = (node_value(inner), at(path, name_node))
        else:
            flat[key] = (node_value(value_node), at(path, key_node))
    return flat
