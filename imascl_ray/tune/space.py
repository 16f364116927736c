"""Search-space files (``tune_spaces/*.yaml``): parsed and checked before any trial starts.

A space file names a base recipe, fixed overrides, and the config keys to search, each with one
distribution; plus the metric, the number of samples, the scheduler and the resources of a trial.
``tune_spaces/README.md`` documents the schema. Everything here is plain Python (YAML, the config
module, optionally Optuna's distribution classes): no Ray, so a bad file fails fast and the checks are
unit-tested without a cluster.

Every error names the file and line (or the key) at fault: an unknown key (with the closest known
one), a distribution that does not exist, an empty or reversed range, a value of the wrong type for
its config key, a pair-set name that does not parse. (A pair set the *corpus* lacks is found when the
sweep splits the corpus for its shared teacher cache, still before any trial starts.)
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imascl_ray.config import (
    Config,
    compose_yaml_file,
    flatten,
    from_flat,
    load_config,
    parse_override,
    resolve_recipe,
)
from imascl_ray.errors import InputError

SCORE = "val/mean/acc"
"""The loop's validation metric (:data:`imascl_ray.engine.loop.SCORE`, kept here to stay torch-free)."""

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice", "grid")
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

#: Config keys a sweep cannot search, and why.
NOT_SEARCHABLE = {
    "tracking.": "the sweep decides where runs and MLflow records go",
    "debug.": "debug hooks are for tests of a single run",
    "teacher.": "the trials share one teacher cache, so the teacher is fixed for a sweep",
    "data.corpus": "the trials share one corpus and one teacher cache",
    "scaling.num_workers": "a trial's resources are fixed: they decide how many trials run at once",
    "scaling.cpus_per_worker": "a trial's resources are fixed: they decide how many trials run at once",
    "scaling.use_gpu": "a trial's resources are fixed: they decide how many trials run at once",
}
MAX_DATA_VARIANTS = 256
"""At most this many combinations of searched ``data.*`` values (each is split for the teacher cache)."""


@dataclass(frozen=True)
class Parameter:
    """One searched config key and its distribution.

    ``args``: ``(low, high)`` for ``uniform`` / ``loguniform``; ``(low, high, step)`` for ``int``
    (both ends included); the values for ``choice`` / ``grid``.
    """

    key: str
    kind: str
    args: tuple[Any, ...]
    where: str = "search space"

    @property
    def categorical(self) -> bool:
        return self.kind in ("choice", "grid")

    def describe(self) -> str:
        """``loguniform(1e-05, 0.001)``, ``choice(priority, average)``: for logs and MLflow params."""
        return f"{self.kind}({', '.join(_show(value) for value in self.args)})"

    def values(self, limit: int = 256) -> list[Any]:
        """Values to check against the config: every one where there are at most ``limit``, else the
        ends (real ranges hold floats, so a range on an integer key fails the check, as it should)."""
        if self.categorical:
            return list(self.args)
        if self.kind == "int":
            low, high, step = self.args
            if (high - low) // step < limit:
                return list(range(low, high + 1, step))
            return [low, high]
        return list(self.args)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this distribution can produce."""
        if self.categorical:
            return any(_same(value, option) for option in self.args)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int":
            low, high, step = self.args
            return isinstance(value, int) and low <= value <= high and (value - low) % step == 0
        low, high = self.args
        return low <= value <= high

    def to_optuna(self) -> Any:
        """The Optuna distribution (a float, int or categorical one)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "grid":
            raise ValueError(f"{self.key}: a grid runs on Tune's grid search, not on Optuna")
        if self.kind == "choice":
            return CategoricalDistribution(list(self.args))
        if self.kind == "int":
            low, high, step = self.args
            return IntDistribution(low, high, step=step)
        low, high = self.args
        return FloatDistribution(low, high, log=self.kind == "loguniform")

    def to_tune(self) -> Any:
        """The Ray Tune domain (``tune.loguniform``, ``tune.grid_search``, ...); imports Ray."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "int":
            low, high, step = self.args
            return tune.qrandint(low, high, step)  # both ends included
        low, high = self.args
        return tune.loguniform(low, high) if self.kind == "loguniform" else tune.uniform(low, high)


@dataclass(frozen=True)
class SchedulerSettings:
    """The trial scheduler: ``asha`` (stop the trials that trail at each rung) or ``fifo`` (none)."""

    name: str = "asha"
    time_attr: str = "step"
    """What rungs count: ``step`` (the global step the loop reports) or ``training_iteration``."""
    grace_period: int = 1
    max_t: int = 1
    reduction_factor: float = 2.0


@dataclass
class SearchSpace:
    """A checked search space: the fixed config, the searched parameters, and how to run the sweep."""

    path: Path
    name: str
    fixed: Config
    """The base recipe with the space's overrides and the command line's on top."""
    parameters: dict[str, Parameter]
    metric: str = SCORE
    mode: str = "max"
    num_samples: int = 1
    seed: int = 0
    max_concurrent_trials: int | None = None
    """None: as many as the cluster's resources allow (see :func:`max_concurrent_trials`)."""
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    trial_cpus: float = 1.0
    """The CPU of a trial's own process (the Tune trial that drives its ``TorchTrainer``)."""
    pinned: dict[str, Any] = field(default_factory=dict)
    """Searched keys that the command line fixed (no longer searched)."""
    overrides: tuple[str, ...] = ()
    """The command line's ``key=value`` overrides (a resumed sweep applies them again)."""

    @property
    def algorithm(self) -> str:
        """``grid`` when any parameter is a grid (Tune's grid search x random sampling), else ``optuna``."""
        return "grid" if any(p.kind == "grid" for p in self.parameters.values()) else "optuna"

    def grid_size(self) -> int:
        """Combinations of the grid parameters (1 without any)."""
        return math.prod(len(p.args) for p in self.parameters.values() if p.kind == "grid")

    def trial_count(self) -> int:
        """How many trials the sweep runs: ``num_samples``, times the grid's size for a grid."""
        return self.num_samples * self.grid_size()

    def describe(self) -> dict[str, str]:
        """``{"loss.tau": "loguniform(0.02, 0.2)", ...}``."""
        return {key: parameter.describe() for key, parameter in self.parameters.items()}

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The config of one trial: the fixed config with ``params`` (searched key -> value) on top."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise InputError(f"{self.path}: values for keys that are not searched: {', '.join(unknown)}")
        values = {key: _plain(value) for key, value in params.items()}
        return from_flat({**flatten(self.fixed), **values})

    def data_variants(self) -> dict[str, Config]:
        """One config per combination of the searched ``data.*`` values (just the fixed config when none
        is searched), labelled by where the values come from: the inputs of the shared teacher cache."""
        searched = [p for key, p in self.parameters.items() if key.startswith("data.")]
        if not searched:
            return {f"{self.path}: data.pair_set={self.fixed.data.pair_set}": self.fixed}
        variants = {}
        for combination in itertools.product(*(p.args for p in searched)):
            label = "; ".join(
                f"{p.where}: {p.key}={_show(value)}" for p, value in zip(searched, combination, strict=True)
            )
            values = {p.key: value for p, value in zip(searched, combination, strict=True)}
            variants[label] = from_flat({**flatten(self.fixed), **values})
        return variants

    def trial_resources(self) -> dict[str, float]:
        """What one trial takes from the cluster: its own CPU, plus its Train workers' CPUs and GPUs."""
        scaling = self.fixed.scaling
        resources = {"CPU": self.trial_cpus + scaling.num_workers * scaling.cpus_per_worker}
        if scaling.use_gpu:
            resources["GPU"] = float(scaling.num_workers)
        return resources


def max_concurrent_trials(cluster: Mapping[str, float], per_trial: Mapping[str, float]) -> int:
    """How many trials fit on ``cluster`` (``ray.cluster_resources()``) at once; an error if none does.

    A trial takes ``per_trial`` resources (:meth:`SearchSpace.trial_resources`): 1 CPU for its own
    process and its workers' CPUs and GPUs; Ray Train places the workers in a placement group of their
    own, so Tune's trial resources alone would undercount and over-subscribe the cluster.
    """
    fits = []
    for resource, amount in per_trial.items():
        if amount <= 0:
            continue
        available = float(cluster.get(resource, 0.0))
        fits.append(math.floor(available / amount + 1e-9))
    count = min(fits) if fits else 1
    if count < 1:
        need = ", ".join(f"{amount:g} {name}" for name, amount in per_trial.items() if amount > 0)
        have = ", ".join(f"{cluster.get(name, 0):g} {name}" for name in per_trial)
        raise InputError(
            f"one trial needs {need} (1 CPU for the trial, plus scaling.num_workers x "
            f"scaling.cpus_per_worker), but the cluster has {have}: lower scaling.num_workers or "
            "scaling.cpus_per_worker (or, on an autoscaling cluster, set max_concurrent_trials in the space)"
        )
    return count


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
    root = _compose(path)
    base_dir = Path(base_dir) if base_dir is not None else path.parent
    entries = _mapping_entries(root, path, "a search space")
    for key, (key_node, _) in entries.items():
        if key not in TOP_LEVEL_KEYS:
            raise InputError(f"{_at(path, key_node)}: unknown key {key!r}{_closest(key, TOP_LEVEL_KEYS)}")
    if "search" not in entries:
        raise InputError(f"{path}: no 'search' section: name at least one config key to search")

    # The fixed config: base recipe, then the space's overrides, then the command line.
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    base_node = entries.get("base", (None, None))[1]
    base = _value(base_node) if base_node is not None else None
    if base is not None:
        if not isinstance(base, str):
            raise InputError(f"{_at(path, base_node)}: base must be a recipe name or a YAML path")
        candidate = base_dir / base
        try:
            base_path = candidate if candidate.is_file() else resolve_recipe(base)
        except InputError as error:
            raise InputError(f"{_at(path, base_node)}: base: {error}") from None
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
    for key, (key_node, value_node) in _mapping_entries(search_node, path, "'search'").items():
        where = _at(path, key_node)
        if key in origins and not origins[key].startswith("command line"):
            raise InputError(f"{where}: {key} is both searched and fixed ({origins[key]})")
        parameters[key] = _parse_parameter(key, value_node, where)
    if not parameters:
        raise InputError(f"{_at(path, search_node)}: 'search' names no config key")
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
        return _value(entries[name][1]), _at(path, entries[name][0])

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
    if not _is_int(samples) or samples < 1:
        raise InputError(f"{where}: num_samples must be a positive integer, got {samples!r}")
    seed, where = setting("seed", 0)
    if not _is_int(seed):
        raise InputError(f"{where}: seed must be an integer, got {seed!r}")
    concurrency, where = setting("max_concurrent_trials", "auto")
    if concurrency == "auto":
        concurrency = None
    elif not _is_int(concurrency) or concurrency < 1:
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


def absolute_paths(config: Config, cwd: Path) -> Config:
    """``config`` with its relative paths anchored at ``cwd``: always the output folder (and so the
    default MLflow store); the corpus, model and teacher folders, pair files and the teacher cache
    folder where such a relative path exists (a hub id such as ``intfloat/e5`` stays as it is)."""

    def anchored(value: str | None, *, always: bool = False) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        candidate = cwd / value
        return str(candidate.resolve()) if always or candidate.exists() else value

    def replace(section: Any, **changes: Any) -> Any:
        return dataclasses.replace(section, **changes)

    return dataclasses.replace(
        config,
        model=replace(config.model, name=anchored(config.model.name)),
        teacher=replace(
            config.teacher,
            name=anchored(config.teacher.name),
            cache_dir=anchored(config.teacher.cache_dir, always=True),
        ),
        data=replace(
            config.data,
            corpus=anchored(config.data.corpus),
            exclude=[anchored(path) for path in config.data.exclude],
        ),
        eval=replace(config.eval, pairs=[anchored(path) for path in config.eval.pairs]),
        tracking=replace(config.tracking, output_dir=anchored(config.tracking.output_dir, always=True)),
    )


def _parse_parameter(key: str, node: yaml.Node, where: str) -> Parameter:
    hint = "a distribution such as {loguniform: [1e-5, 1e-3]} or {choice: [priority, average]}"
    if not isinstance(node, yaml.MappingNode):
        raise InputError(
            f"{where}: {key} needs {hint} (a fixed value belongs under 'overrides'), got {_value(node)!r}"
        )
    if len(node.value) != 1:
        raise InputError(f"{where}: {key} needs exactly one distribution, e.g. {hint}")
    kind_node, args_node = node.value[0]
    kind, args = kind_node.value, _value(args_node)
    where = _at_node(where, kind_node)
    if kind not in DISTRIBUTIONS:
        raise InputError(
            f"{where}: {key}: unknown distribution {kind!r}{_closest(kind, DISTRIBUTIONS)} "
            f"(known: {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(args, list):
        raise InputError(f"{where}: {key}: {kind} takes a list, e.g. {kind}: {_example(kind)}")
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
            if _same(first, second):
                raise InputError(f"{where}: {key}: {kind} lists {first!r} twice")
        return Parameter(key, kind, tuple(args), where)
    if kind == "int":
        if len(args) not in (2, 3) or not all(_is_int(v) for v in args):
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
        raise InputError(f"{where}: {key}: {kind} takes [low, high], e.g. {kind}: {_example(kind)}")
    low, high = (_number(v, f"{where}: {key}: {kind}") for v in args)
    if low >= high:
        raise InputError(f"{where}: {key}: empty range [{_show(low)}, {_show(high)}]: low must be below high")
    if kind == "loguniform" and low <= 0:
        raise InputError(f"{where}: {key}: loguniform needs a positive low end, got {_show(low)}")
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
            raise InputError(f"{parameter.where}: {parameter.key}={_show(value)}: {message}") from None


def _parse_points(
    entry: tuple[yaml.Node, yaml.Node] | None, path: Path, parameters: dict[str, Parameter], pinned: set[str]
) -> list[dict[str, Any]]:
    """The points to run first; a key the command line pinned is left out of them."""
    if entry is None:
        return []
    key_node, node = entry
    if not isinstance(node, yaml.SequenceNode):
        raise InputError(f"{_at(path, key_node)}: points_to_evaluate is a list of {{key: value}} mappings")
    points = []
    for item in node.value:
        point = {}
        for key, (point_key_node, value_node) in _mapping_entries(item, path, "a point").items():
            where = _at(path, point_key_node)
            value = _value(value_node)
            if key in pinned:
                continue
            if key not in parameters:
                raise InputError(
                    f"{where}: points_to_evaluate: {key!r} is not a searched key"
                    f"{_closest(key, list(parameters))}"
                )
            if parameters[key].kind != "int" and not parameters[key].categorical and isinstance(value, str):
                value = _number(value, f"{where}: points_to_evaluate: {key}")
            if not parameters[key].contains(value):
                raise InputError(
                    f"{where}: points_to_evaluate: {key}={_show(value)} is outside "
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
        for key, (key_node, value_node) in _mapping_entries(entry[1], path, "'scheduler'").items():
            if key not in SCHEDULER_KEYS:
                raise InputError(
                    f"{_at(path, key_node)}: unknown scheduler key {key!r}{_closest(key, SCHEDULER_KEYS)}"
                )
            settings[key], where[key] = _value(value_node), _at(path, key_node)
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
    if not _is_int(max_t) or max_t < 1:
        raise InputError(f"{where.get('max_t', path)}: scheduler max_t must be a positive integer")
    if not _is_int(grace) or not 1 <= grace <= max_t:
        raise InputError(
            f"{where.get('grace_period', path)}: scheduler grace_period must be an integer in "
            f"[1, max_t={max_t}]"
        )
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 1:
        raise InputError(f"{where.get('reduction_factor', path)}: scheduler reduction_factor must exceed 1")
    return SchedulerSettings("asha", time_attr, int(grace), int(max_t), float(factor))


def _parse_resources(entry: tuple[yaml.Node, yaml.Node] | None, path: Path) -> float:
    if entry is None:
        return 1.0
    trial_cpus = 1.0
    for key, (key_node, value_node) in _mapping_entries(entry[1], path, "'resources'").items():
        where = _at(path, key_node)
        if key not in RESOURCE_KEYS:
            raise InputError(
                f"{where}: unknown resources key {key!r}{_closest(key, RESOURCE_KEYS)} (the workers' "
                "resources are scaling.num_workers, scaling.cpus_per_worker and scaling.use_gpu, "
                "set under 'overrides')"
            )
        value = _value(value_node)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{where}: resources trial_cpus must be a number >= 0, got {value!r}")
        trial_cpus = float(value)
    return trial_cpus


def _flat_overrides(node: yaml.Node, path: Path) -> dict[str, tuple[Any, str]]:
    """``overrides:`` as ``{"section.key": (value, "file, line n")}``: sections nested or dotted keys."""
    flat: dict[str, tuple[Any, str]] = {}
    for key, (key_node, value_node) in _mapping_entries(node, path, "'overrides'").items():
        if "." not in key and isinstance(value_node, yaml.MappingNode):
            for name, (name_node, inner) in _mapping_entries(value_node, path, f"'{key}'").items():
                flat[f"{key}.{name}"] = (_value(inner), _at(path, name_node))
        else:
            flat[key] = (_value(value_node), _at(path, key_node))
    return flat


# ---------------------------------------------------------------------------------------------------------
# YAML with line numbers


def _compose(path: Path) -> yaml.Node:
    root = compose_yaml_file(path, "search-space file")
    if root is None:
        raise InputError(f"{path}: empty search-space file")
    return root


def _mapping_entries(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise InputError(f"{_at(path, node)}: {what} must be a mapping of keys to values")
    entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in entries:
            raise InputError(f"{_at(path, key_node)}: {key!r} appears twice")
        entries[key] = (key_node, value_node)
    return entries


def _value(node: yaml.Node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def _at(path: Path, node: yaml.Node) -> str:
    return f"{path}, line {node.start_mark.line + 1}"


def _at_node(where: str, node: yaml.Node) -> str:
    return where.rsplit(", line ", 1)[0] + f", line {node.start_mark.line + 1}"


def _closest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _example(kind: str) -> str:
    return {
        "loguniform": "[1e-5, 1e-3]",
        "uniform": "[0.0, 1.0]",
        "int": "[16, 64, 16]",
        "choice": "[priority, average]",
        "grid": "[en-xx, all]",
    }[kind]


def _number(value: Any, where: str) -> float:
    """A float from a YAML number or a string such as ``1e-5`` (YAML 1.1 reads that as a string)."""
    if isinstance(value, bool):
        raise InputError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a number, got {value!r}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _same(first: Any, second: Any) -> bool:
    """Equal values of the same type (``True`` is not ``1``)."""
    return type(first) is type(second) and first == second


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    """A Python scalar from a NumPy one (Tune's samplers may hand back ``numpy.float64``)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (list, tuple, dict)) else value


def space_to_dict(space: SearchSpace) -> dict[str, Any]:
    """A JSON-ready summary of a space (for logs and the sweep's state file)."""
    return {
        "path": str(space.path),
        "name": space.name,
        "algorithm": space.algorithm,
        "parameters": space.describe(),
        "metric": space.metric,
        "mode": space.mode,
        "num_samples": space.num_samples,
        "trials": space.trial_count(),
        "seed": space.seed,
        "scheduler": dataclasses.asdict(space.scheduler),
        "trial_cpus": space.trial_cpus,
        "pinned": space.pinned,
    }
