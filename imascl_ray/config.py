"""One typed configuration for a run: YAML recipe + ``key=value`` overrides -> nested dataclasses.

The same object flows unchanged from the command line to Tune's param space (as flat ``section.key``
values, :func:`flatten`) to every Ray worker (as a plain dict, :func:`to_dict` / :func:`from_dict`).
Every key is checked: an unknown key names itself, where it came from (file and line, or the command
line) and the closest known key; a value of the wrong type names the key and the type it needs.

The sections are pydantic dataclasses: pydantic checks and converts the types (ints and bools strictly;
floats and strings laxly: ``"3e-5"`` is a float, ``7`` may be a str), refuses unknown keys, and reads the
docstring under each field as its description, from which ``imascl-ray config --reference`` and the
reference in docs/configuration.md are generated (:mod:`imascl_ray.config_schema` does that part and
keeps every value's file and line). This module declares the fields and adds ranges and rules between
keys (:func:`_validate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

from imascl_ray import config_schema
from imascl_ray.config_schema import compose_yaml_file as compose_yaml_file  # re-exported: tune.space
from imascl_ray.config_schema import (
    field_types,
    flatten_dict,
    parse_override,
    plain,
    read_yaml,
    validate_flat,
)
from imascl_ray.config_schema import section_dataclass as dataclass  # every section: a pydantic dataclass
from imascl_ray.errors import InputError


@dataclass
class ModelConfig:
    """The student encoder."""

    name: str = "offline:multilingual-e5-small"
    """Hub id, local folder, or ``offline:multilingual-e5-small`` (built from PyPI packages)."""
    pooling: Literal["mean", "cls"] = "mean"
    """How token states become a sentence embedding (e5 and MPNet models use mean)."""
    normalize: bool = True
    """L2-normalise the embeddings (the losses use cosines either way; exports keep it)."""
    prefix: str | None = None
    """Text put before every input (e5 models want ``query: ``); None: what the model folder records."""
    max_length: int = 128
    """Longest input in tokens; batches are padded to their longest text, not to this."""
    trust_remote_code: bool = False
    """Run a hub model's own Python code; off unless you trust the model's authors."""
    freeze_embeddings: bool = False
    """Freeze the word embeddings (most of a multilingual model's parameters; a big CPU speed-up)."""
    trim_vocabulary: bool = False
    """Keep only the vocabulary pieces the corpus uses (same embeddings on its texts, far fewer rows)."""
    unpad: bool = True
    """Run the transformer's dense layers on the real tokens only, padding only where attention needs it
    (BERT-family models; same embeddings, less compute); False: every layer on the padded batch."""


@dataclass
class TeacherConfig:
    """The frozen teacher whose similarities become the soft labels."""

    name: str | None = None
    """None: the student's starting checkpoint (the paper's best setting: mE5 teaches mE5)."""
    pooling: Literal["mean", "cls"] = "mean"
    """As ``model.pooling``, for the teacher."""
    prefix: str | None = None
    """As ``model.prefix``; the authors gave their teacher ``query: `` and their student none."""
    max_length: int = 128
    """Longest teacher input in tokens."""
    batch_size: int = 128
    """Sentences per batch while the teacher embeds the corpus once into its cache."""
    cache_dir: str | None = None
    """Where teacher embeddings are cached (None: ``<output_dir>/cache/teacher``), shared by runs."""
    workers: int | None = None
    """Ray Data actors that embed the corpus into the cache, each holding the teacher: one GPU each where
    the Ray cluster has GPUs, else ``teacher.cpus_per_worker`` CPUs. 0: this process embeds it (one
    machine, no cluster); None: one actor per GPU when the run's Ray cluster has GPUs, else 0."""
    cpus_per_worker: int = 1
    """CPUs (and torch threads) of each CPU teacher actor of ``teacher.workers``."""


@dataclass
class DataConfig:
    """The parallel corpus and how it is cut into batches."""

    corpus: str = "gettext"
    """A corpus file (TSV/JSONL/Parquet), ``hub:<dataset id>``, or ``gettext`` (this machine's catalogues)."""
    languages: list[str] = field(default_factory=lambda: ["en", "fr", "ja", "ko", "ru"])
    """ISO 639-1 codes the pair set is built from."""
    pair_set: str = "en-xx"
    """``en-xx``, ``all``, ``en-xx+fr-xx``, ``en-xx+ru-xx``, or a list such as ``en-fr,en-ja``."""
    validation_pair_set: str | None = None
    """Language-pair set whose validation pairs score the run (val/mean/acc); None: data.pair_set.
    A sweep over data.pair_set sets it to the union of the searched sets."""
    priority: str = "auto"
    """Anchor-language order, e.g. ``en,ru,ja,fr,ko``; ``auto``: by corpus volume, as the paper."""
    max_pairs_per_language_pair: int = 25_000
    """Training pairs kept per language pair, drawn at random (the paper: 25k, 20k of them for training)."""
    validation_pairs: int = 5_000
    """Held out per language pair for validation (the paper: 20k train / 5k validation)."""
    test_pairs: int = 0
    """Held out per language pair for the final evaluation (0: none)."""
    mixed_batches: bool = False
    """False: one language pair per global batch, as the authors."""
    exclude: list[str] = field(default_factory=list)
    """Evaluation pair files whose sentences are removed from training (contamination filter)."""
    seed: int = 7_777_777
    """Seed of sampling and splits (the authors' seed)."""


@dataclass
class LossConfig:
    """Which loss, and its temperatures."""

    name: Literal["soft", "infonce", "mse", "hard_negatives"] = "soft"
    """The loss: ``soft`` (the paper's soft-contrastive loss, labels from the teacher), ``infonce`` (hard
    labels: only the translation is a positive), ``mse`` (embedding distillation onto the teacher,
    Reimers & Gurevych 2020) or ``hard_negatives`` (InfoNCE with mined hard negatives, mUSE)."""
    labels: Literal["priority", "average"] = "priority"
    """The soft labels of ``soft``: ``priority`` (Eq. 4, the anchor language's teacher similarities) or
    ``average`` (Eq. 5, both languages')."""
    tau: float = 0.1
    """Student temperature: ``sim = cos / tau``."""
    teacher_tau: float | None = None
    """Temperature of the soft labels; None: ``tau``, as in the paper."""
    hard_mix: float = 0.0
    """Past the paper, for ``soft``: labels ``a * I + (1 - a) * soft`` with ``a`` this value in [0, 1]
    (0: the paper's soft labels; 1: hard InfoNCE's targets; between: the translation keeps at least ``a``)."""
    tms: bool = True
    """Add the monolingual term: ``L = lam * L_cross + L_mono`` (Eq. 8; not for ``mse``)."""
    lam: float = 0.1
    """Weight of the cross-lingual term under TMS (the paper: 0.1; the authors' code: 1)."""
    margin: float = 0.0
    """Additive margin on each translation pair's cosine (LaBSE); 0 is the paper."""
    hard_negatives: int = 1
    """For ``hard_negatives``: how many teacher-nearest non-translations join the batch per pair."""
    local: bool = False
    """Compute each worker's own rows and columns only (B x N logits instead of N x N)."""


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and decay."""

    lr: float = 3e-5
    """The authors' code ran 3e-5 (the paper prints 5e-3)."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay (the authors: 0)."""
    warmup_ratio: float = 0.0
    """Share of the steps over which the learning rate rises linearly from 0 (the authors: none)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's moment decay rates."""


@dataclass
class ScheduleConfig:
    """How long to train, and how often to report, validate and checkpoint."""

    global_batch_size: int = 32
    """Pairs per step over all workers (the paper: 32); each worker encodes an equal slice."""
    epochs: int = 1
    """Passes over the training pairs (the paper: 30), unless ``max_steps`` is set."""
    max_steps: int | None = None
    """Train exactly this many steps (epochs follow one another as needed); None: ``epochs`` epochs."""
    log_every: int = 10
    """Log training metrics (loss, throughput, timings) to MLflow and the console every this many steps; Ray
    Train hears only validations, since each of its reports is a barrier of all workers."""
    eval_every: int = 100
    """Validate and checkpoint every this many steps (and at the end)."""
    patience: int | None = None
    """Stop after this many validations without improvement (None: never)."""
    keep_checkpoints: int = 2
    """Checkpoints kept by validation score (the latest is always kept too, for resuming)."""
    seed: int = 7_777_777
    """Seed of batch order and dropout."""


@dataclass
class EvalConfig:
    """Evaluation of the exported best model at the end of a run."""

    suite: Literal["local", "paper", "none"] = "local"
    """``local``: bitext accuracy on held-out pair files; ``paper``: the MTEB suite; ``none``."""
    pairs: list[str] = field(default_factory=list)
    """Pair files for the ``local`` suite (empty: the run's held-out test pairs)."""


@dataclass
class ScalingConfig:
    """Ray Train workers."""

    num_workers: int = 2
    """Ray Train workers (data-parallel ranks)."""
    use_gpu: bool = False
    """One GPU per worker, NCCL between them (gloo on CPU)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker; also the worker's torch threads."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 where the GPU supports it, fp16 with a grad scaler on older GPUs, fp32 on CPU."""
    encoding: Literal["plain", "bucketed", "cached"] = "bucketed"
    """How a worker encodes its slice: ``bucketed`` (texts sorted by length, encoded in micro-batches
    padded to their own longest: same loss, far less padding; use it always), ``cached`` (GradCache: the
    bucketed micro-batches without gradient, the loss, then each re-encoded with gradient; memory of one
    micro-batch whatever the global batch, one more forward pass; use it when the batch does not fit) or
    ``plain`` (one batch per side padded to its longest text)."""
    micro_batch_size: int = 16
    """Texts per micro-batch of ``bucketed`` and ``cached`` encoding (a worker's sources, targets and hard
    negatives are bucketed together)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How Ray places the workers on nodes (PACK: as few nodes as possible)."""
    max_failures: int = 2
    """Restarts of a failed worker group, each from the last checkpoint."""


@dataclass
class TrackingConfig:
    """Where results go."""

    output_dir: str = "imascl-runs"
    """Runs, caches, Ray results and the default MLflow store go here (shared storage on a cluster)."""
    run_name: str | None = None
    """Name of the run (None: label, pair set and a timestamp)."""
    storage_path: str | None = None
    """Where Ray keeps checkpoints and results: a shared folder or ``s3://bucket/prefix`` on a cluster
    (None: ``<output_dir>/ray``)."""
    mlflow_uri: str | None = None
    """None: ``sqlite:///<absolute output_dir>/mlflow.db``; ``http://...`` for a tracking server."""
    experiment: str = "imascl-ray"
    """MLflow experiment."""
    register_as: str | None = None
    """Register the run's best model as a new version of this MLflow registered model (None: don't).
    In a sweep, only the best trial's model is registered (``imascl-ray tune --register-as``)."""
    log_model: bool = True
    """Log the exported model into the run as an MLflow model (sentence-transformers flavour; a full
    copy of the weights, ~0.5 GB for multilingual-e5-small). False: the run keeps its metrics and the
    model stays in ``<run>/model`` only, unless ``register_as`` asks for a registered version. Sweeps
    and benchmarks that train many models turn it off; a sweep still logs its best trial's model when
    it registers it."""


@dataclass
class Config:
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ---------------------------------------------------------------------------------------------------------
# Reading and writing


RECIPES = Path(__file__).parent / "recipes"

_FAULT_HOOK = "the environment variables IMASCL_FAULT_AT_STEP and IMASCL_FAULT_RANK (for tests only)"
RETIRED_KEYS: dict[str, str] = {
    "loss.label": (
        "loss.name (soft, infonce, mse, hard_negatives) for the loss and loss.labels (priority, average) for "
        "the soft labels: loss.label=priority is loss.name=soft loss.labels=priority, loss.label=hard is "
        "loss.name=infonce"
    ),
    "debug.fail_at_step": _FAULT_HOOK,
    "debug.fail_rank": _FAULT_HOOK,
}
"""Keys that no longer exist, and what replaced them (the message names them)."""


def recipe_names() -> list[str]:
    """The recipes shipped with the package (``imascl_ray/recipes/*.yaml``), by name."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml"))


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A YAML file as given, or a shipped recipe by name (``quickstart``, ``paper_cross_lingual``...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise InputError(f"{name_or_path}: no such config file or recipe (recipes: {', '.join(recipe_names())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """A :class:`Config` from a YAML file (or the defaults) with ``section.key=value`` overrides on top.

    Override values are parsed as YAML scalars/lists (``loss.tau=0.05``, ``data.languages=[en,fr]``,
    ``model.prefix=null``).
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        values, origins = read_yaml(Path(path))
    for override in overrides:
        key, value = parse_override(override)
        values[key] = value
        origins[key] = f"command line ({override})"
    return from_flat(values, origins)


def from_flat(values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> Config:
    """A :class:`Config` from flat ``{"section.key": value}`` values (Tune's param space uses this form).

    pydantic checks the types (:func:`~imascl_ray.config_schema.validate_flat`: an error names the key
    and where its value came from), then :func:`_validate` the ranges and the rules between keys.
    """
    origins = origins or {}
    config = validate_flat(Config, values, origins, RETIRED_KEYS)
    _validate(config)
    return config


def from_dict(data: Mapping[str, Any]) -> Config:
    """The inverse of :func:`to_dict`: a nested plain dict (as a Ray worker receives it) -> Config."""
    return from_flat(flatten_dict(data))


def to_dict(config: Config) -> dict[str, Any]:
    """A nested dict of plain values (YAML/JSON-safe; tuples become lists)."""
    return plain(dataclasses.asdict(config))


def flatten(config: Config) -> dict[str, Any]:
    """``{"loss.tau": 0.1, ...}``: one entry per field (for MLflow params and Tune search spaces)."""
    return flatten_dict(to_dict(config))


def dump_yaml(config: Config, path: str | Path) -> None:
    """Write ``config`` as a YAML recipe that :func:`load_config` reads back unchanged."""
    Path(path).write_text(
        yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def known_keys() -> list[str]:
    """Every ``section.key`` of :class:`Config`."""
    return list(field_types(Config))


def field_docs() -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, description)`` for every field: docs/configuration.md's reference."""
    return config_schema.field_docs(Config)


def reference_markdown() -> str:
    """The configuration reference (a Markdown table per section) that docs/configuration.md embeds."""
    return config_schema.reference_markdown(Config)


# ---------------------------------------------------------------------------------------------------------
# What the types above cannot say: ranges, and rules between keys

LOWER_BOUNDS: dict[str, int] = {
    "model.max_length": 8,
    "data.max_pairs_per_language_pair": 1,
    "data.validation_pairs": 1,
    "data.test_pairs": 0,
    "loss.lam": 0,
    "loss.hard_negatives": 1,
    "schedule.global_batch_size": 2,
    "schedule.epochs": 1,
    "schedule.max_steps": 1,
    "schedule.log_every": 1,
    "schedule.eval_every": 1,
    "schedule.patience": 1,
    "scaling.micro_batch_size": 1,
    "schedule.keep_checkpoints": 1,
    "scaling.num_workers": 1,
    "scaling.max_failures": 0,
    "optim.weight_decay": 0,
}
"""The smallest value of each bounded key (None, where a key allows it, is always allowed)."""
POSITIVE = ("loss.tau", "loss.teacher_tau", "optim.lr", "optim.max_grad_norm", "scaling.cpus_per_worker")
WHY = {
    "data.validation_pairs": "the validation pairs score every run and choose its best checkpoint",
    "optim.max_grad_norm": "clipping to a norm of 0 would zero every gradient",
}
"""Why a bound holds, where the message should say (every float is also finite: see the sections' rules)."""


def _validate(config: Config) -> None:
    """Ranges a type cannot express, and rules between keys; an error names the key(s) and the value.

    (No file and line here: a search space checks each searched value through :func:`from_flat` and
    names its own line.)
    """
    for key, value in flatten(config).items():
        if value is None:
            continue
        if key in POSITIVE and value <= 0:
            raise InputError(f"{key} must be positive, got {value}" + (f": {WHY[key]}" if key in WHY else ""))
        if key in LOWER_BOUNDS and value < LOWER_BOUNDS[key]:
            need = (
                "must not be negative" if LOWER_BOUNDS[key] == 0 else f"must be at least {LOWER_BOUNDS[key]}"
            )
            raise InputError(f"{key} {need}, got {value}" + (f": {WHY[key]}" if key in WHY else ""))
    if not 0 <= config.loss.hard_mix <= 1:
        raise InputError(f"loss.hard_mix must be in [0, 1], got {config.loss.hard_mix}")
    if not all(0 <= beta < 1 for beta in config.optim.betas):
        raise InputError(
            f"optim.betas must both be in [0, 1) (AdamW's moment decay rates), got {list(config.optim.betas)}"
        )
    if not 0 <= config.optim.warmup_ratio < 1:
        raise InputError(f"optim.warmup_ratio must be in [0, 1), got {config.optim.warmup_ratio}")
    if len(config.data.languages) < 2:
        raise InputError("data.languages must name at least two languages")
    if config.schedule.global_batch_size % config.scaling.num_workers:
        raise InputError(
            f"schedule.global_batch_size ({config.schedule.global_batch_size}) must be divisible by "
            f"scaling.num_workers ({config.scaling.num_workers}): every worker takes an equal slice"
        )
    elsewhere = (
        "eval.pairs" if config.eval.pairs else "eval.suite=paper" if config.eval.suite == "paper" else ""
    )
    if config.model.trim_vocabulary and elsewhere:
        raise InputError(
            f"model.trim_vocabulary=true and {elsewhere}: the trimmed vocabulary covers the run's corpus "
            "only, so texts from elsewhere would be scored with unknown pieces; change one of the two "
            "(eval.suite=local without eval.pairs scores the run's own test pairs)"
        )
