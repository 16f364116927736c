"""A checked search space: the fixed config, the searched parameters as Ray Tune domains, the sweep's
settings. :mod:`imascl_ray.tune.space` reads one from a ``tune_spaces/*.yaml`` file.

Each searched key becomes ONE Ray Tune domain (:meth:`Parameter.domain`); the sweep hands the whole
param space to the ``Tuner``, and ``OptunaSearch`` converts it into Optuna distributions itself, so
Tune's samplers, Tune's grid and Optuna draw from the same declared ranges. The integer forms are chosen
so that both conversions are exact (both ends included, grid points counted from ``low``):

=====================  ===============================  =========================================
space file             Tune domain                      what ``OptunaSearch`` makes of it
=====================  ===============================  =========================================
``int: [lo, hi]``      ``tune.randint(lo, hi + 1)``     ``IntDistribution(lo, hi)``
``int: [lo, hi, s]``   ``tune.qrandint(lo, hi, s)``     ``IntDistribution(lo, hi, step=s)``
(``lo`` a multiple     (Tune draws the multiples of
of ``s``)              ``s`` in ``[lo, hi]``)
``int: [lo, hi, s]``   ``tune.choice([lo, lo+s, ..])``  ``CategoricalDistribution`` of the grid
(otherwise)
``uniform``            ``tune.uniform(lo, hi)``         ``FloatDistribution(lo, hi)``
``loguniform``         ``tune.loguniform(lo, hi)``      ``FloatDistribution(lo, hi, log=True)``
``choice``             ``tune.choice(values)``          ``CategoricalDistribution(values)``
``grid``               ``tune.grid_search(values)``     (not Optuna: Tune's grid search runs it)
=====================  ===============================  =========================================

Nothing here imports Ray at import time (the domains are built on demand), so a bad file fails fast.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imascl_ray.config import Config, flatten, from_flat
from imascl_ray.errors import InputError

SCORE = "val/mean/acc"
"""The loop's validation metric (:data:`imascl_ray.engine.loop.SCORE`, kept here to stay torch-free)."""

DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice", "grid")

#: Config keys a sweep cannot search, and why.
NOT_SEARCHABLE = {
    "tracking.": "the sweep decides where runs and MLflow records go",
    "debug.": "debug hooks are for tests of a single run",
    "teacher.": "the trials share one teacher cache, so the teacher is fixed for a sweep",
    "data.corpus": "the trials share one corpus and one teacher cache",
    "data.validation_pair_set": "every trial of a sweep is scored on the same validation pairs",
    "scaling.num_workers": "a trial's resources are fixed: they decide how many trials run at once",
    "scaling.cpus_per_worker": "a trial's resources are fixed: they decide how many trials run at once",
    "scaling.use_gpu": "a trial's resources are fixed: they decide how many trials run at once",
}
PAIR_KEYS = ("data.pair_set", "data.languages")
"""The searched keys that change a trial's language pairs (and so need one shared yardstick)."""


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
        return f"{self.kind}({', '.join(show(value) for value in self.args)})"

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
            return any(same(value, option) for option in self.args)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int":
            low, high, step = self.args
            return isinstance(value, int) and low <= value <= high and (value - low) % step == 0
        low, high = self.args
        return low <= value <= high

    def domain(self) -> Any:
        """The Ray Tune domain of this distribution (see the module docstring's table); imports Ray."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "int":
            low, high, step = self.args
            if step == 1:
                return tune.randint(low, high + 1)  # Tune's upper end is exclusive
            if low % step == 0:
                return tune.qrandint(low, high, step)  # the multiples of step in [low, high]
            return tune.choice(list(range(low, high + 1, step)))  # a grid that does not start at 0
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

    def param_space(self) -> dict[str, Any]:
        """The Tuner's ``param_space``: one Tune domain per searched key (imports Ray)."""
        return {key: parameter.domain() for key, parameter in self.parameters.items()}

    def grid_size(self) -> int:
        """Combinations of the grid parameters (1 without any)."""
        return math.prod(len(p.args) for p in self.parameters.values() if p.kind == "grid")

    def trial_count(self) -> int:
        """How many trials the sweep runs: ``num_samples``, times the grid's size for a grid."""
        return self.num_samples * self.grid_size()

    def describe(self) -> dict[str, str]:
        """``{"loss.tau": "loguniform(0.02, 0.2)", ...}``."""
        return {key: parameter.describe() for key, parameter in self.parameters.items()}

    def validation_pair_set(self) -> str | None:
        """The one validation set every trial is scored on when the trials' language pairs differ: the
        union of every pair the searched ``data.pair_set`` / ``data.languages`` values allow, as an
        explicit list (``en-fr,en-ru``). None when the pairs are not searched, or the space fixes
        ``data.validation_pair_set`` itself."""
        from imascl_ray.data import resolve_pair_set

        searched = [self.parameters[key] for key in PAIR_KEYS if key in self.parameters]
        if not searched or self.fixed.data.validation_pair_set is not None:
            return None
        union: list[tuple[str, str]] = []
        base = flatten(self.fixed)
        for combination in itertools.product(*(p.args for p in searched)):
            values = {**base, **{p.key: value for p, value in zip(searched, combination, strict=True)}}
            for src, tgt in resolve_pair_set(values["data.pair_set"], values["data.languages"]):
                if (src, tgt) not in union and (tgt, src) not in union:
                    union.append((src, tgt))
        return ",".join(f"{src}-{tgt}" for src, tgt in union)

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The config of one trial: the fixed config with ``params`` (searched key -> value) on top, and
        the sweep's shared validation set (:meth:`validation_pair_set`)."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise InputError(f"{self.path}: values for keys that are not searched: {', '.join(unknown)}")
        return self._config({key: plain(value) for key, value in params.items()})

    def data_variants(self) -> dict[str, Config]:
        """One config per combination of the searched ``data.*`` values (just the fixed config when none
        is searched), labelled by where the values come from: the inputs of the shared teacher cache."""
        searched = [p for key, p in self.parameters.items() if key.startswith("data.")]
        if not searched:
            return {f"{self.path}: data.pair_set={self.fixed.data.pair_set}": self.fixed}
        variants = {}
        for combination in itertools.product(*(p.args for p in searched)):
            label = "; ".join(
                f"{p.where}: {p.key}={show(value)}" for p, value in zip(searched, combination, strict=True)
            )
            variants[label] = self._config(
                {p.key: value for p, value in zip(searched, combination, strict=True)}
            )
        return variants

    def _config(self, values: Mapping[str, Any]) -> Config:
        flat = {**flatten(self.fixed), **values}
        yardstick = self.validation_pair_set()
        if yardstick is not None:
            flat["data.validation_pair_set"] = yardstick
        return from_flat(flat)

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


def absolute_paths(config: Config, cwd: Path) -> Config:
    """``config`` with its relative paths anchored at ``cwd`` (the folder the user launched from; Tune
    runs each trial in a folder of its own): always the output folder, a relative ``storage_path`` and
    a relative local MLflow store (``sqlite:///x.db``, a plain path), so every trial writes to the same
    records; the corpus, model and teacher folders, pair files and the teacher cache folder where such
    a relative path exists (a hub id such as ``intfloat/e5`` stays as it is)."""

    def anchored(value: str | None, *, always: bool = False) -> str | None:
        if value is None or Path(value).is_absolute() or "://" in value:
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
        tracking=replace(
            config.tracking,
            output_dir=anchored(config.tracking.output_dir, always=True),
            storage_path=anchored(config.tracking.storage_path, always=True),
            mlflow_uri=anchored_tracking_uri(config.tracking.mlflow_uri, cwd),
        ),
    )


def anchored_tracking_uri(uri: str | None, cwd: Path) -> str | None:
    """A local MLflow store made absolute: ``sqlite:///x.db`` -> ``sqlite:////<cwd>/x.db``, a plain
    relative path -> an absolute one; servers (``http://...``) and absolute stores stay as they are."""
    if uri is None:
        return None
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        database = uri[len(prefix) :]
        if database and not database.startswith("/") and database != ":memory:":
            return prefix + str((cwd / database).resolve())
        return uri
    if ":" not in uri and not Path(uri).is_absolute():
        return str((cwd / uri).resolve())
    return uri


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
        "validation_pair_set": space.validation_pair_set(),
    }


def same(first: Any, second: Any) -> bool:
    """Equal values of the same type (``True`` is not ``1``)."""
    return type(first) is type(second) and first == second


def show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain(value: Any) -> Any:
    """A Python scalar from a NumPy one (Tune's samplers may hand back ``numpy.float64``)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (list, tuple, dict)) else value
