"""One typed configuration for a run: YAML recipe + ``key=value`` overrides -> nested dataclasses.

The same object flows unchanged from the command line to Tune's param space (as flat ``section.key``
values, :func:`flatten`) to every Ray worker (as a plain dict, :func:`to_dict` / :func:`from_dict`).
Every key is checked: an unknown key names itself, where it came from (file and line, or the command
line) and the closest known key; a value of the wrong type names the key and the type it needs.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

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


@dataclass
class DataConfig:
    """The parallel corpus and how it is cut into batches."""

    corpus: str = "gettext"
    """A corpus file (TSV/JSONL/Parquet), ``hub:<dataset id>``, or ``gettext`` (this machine's catalogues)."""
    languages: list[str] = field(default_factory=lambda: ["en", "fr", "ja", "ko", "ru"])
    """ISO 639-1 codes the pair set is built from."""
    pair_set: str = "en-xx"
    """``en-xx``, ``all``, ``en-xx+fr-xx``, ``en-xx+ru-xx``, or a list such as ``en-fr,en-ja``."""
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

    label: Literal["priority", "average", "hard", "mse", "hard_negatives"] = "priority"
    """Soft labels (priority: Eq. 4, average: Eq. 5), InfoNCE (hard), embedding MSE, or mUSE-style
    hard negatives."""
    tau: float = 0.1
    """Student temperature: ``sim = cos / tau``."""
    teacher_tau: float | None = None
    """Temperature of the soft labels; None: ``tau``, as in the paper."""
    tms: bool = True
    """Add the monolingual term: ``L = lam * L_cross + L_mono`` (Eq. 8)."""
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
    """Report training metrics every this many steps (each Ray report has a cost)."""
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


@dataclass
class DebugConfig:
    """Hooks for testing fault tolerance; leave them alone in real runs."""

    fail_at_step: int | None = None
    """Kill one worker process once, when it is about to run this global step (0-based)."""
    fail_rank: int = 1
    """The rank that ``fail_at_step`` kills."""


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
    debug: DebugConfig = field(default_factory=DebugConfig)


# ---------------------------------------------------------------------------------------------------------
# Reading and writing


RECIPES = Path(__file__).parent / "recipes"


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
        values, origins = _read_yaml(Path(path))
    for override in overrides:
        key, value = parse_override(override)
        values[key] = value
        origins[key] = f"command line ({override})"
    return from_flat(values, origins)


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


def from_flat(values: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> Config:
    """A :class:`Config` from flat ``{"section.key": value}`` values (Tune's param space uses this form)."""
    origins = origins or {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if not dot:
            raise InputError(f"{_where(key, origins)}: {key!r} is not a section.key name{_suggest(key)}")
        nested.setdefault(section, {})[name] = (value, key)
    return _build(Config, nested, origins)


def from_dict(data: Mapping[str, Any]) -> Config:
    """The inverse of :func:`to_dict`: a nested plain dict (as a Ray worker receives it) -> Config."""
    return from_flat(flatten_dict(data))


def to_dict(config: Config) -> dict[str, Any]:
    """A nested dict of plain values (YAML/JSON-safe; tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def flatten(config: Config) -> dict[str, Any]:
    """``{"loss.tau": 0.1, ...}``: one entry per field (for MLflow params and Tune search spaces)."""
    return flatten_dict(to_dict(config))


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


def dump_yaml(config: Config, path: str | Path) -> None:
    """Write ``config`` as a YAML recipe that :func:`load_config` reads back unchanged."""
    Path(path).write_text(
        yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def known_keys() -> list[str]:
    """Every ``section.key`` of :class:`Config`."""
    return list(flatten(Config()))


def field_docs() -> list[tuple[str, str, Any, str]]:
    """``(key, type, default, description)`` for every field: the README's configuration reference."""
    rows = []
    hints_by_section = {}
    for section in dataclasses.fields(Config):
        section_type = typing.get_type_hints(Config)[section.name]
        hints_by_section[section.name] = typing.get_type_hints(section_type)
        docs = _attribute_docs(section_type)
        for item in dataclasses.fields(section_type):
            hint = hints_by_section[section.name][item.name]
            default = getattr(section_type(), item.name)
            rows.append((f"{section.name}.{item.name}", _type_name(hint), default, docs.get(item.name, "")))
    return rows


def reference_markdown() -> str:
    """The configuration reference (a Markdown table per section) that the README embeds."""
    lines: list[str] = []
    section = None
    for key, type_name, default, doc in field_docs():
        name = key.split(".")[0]
        if name != section:
            section = name
            section_doc = (typing.get_type_hints(Config)[name].__doc__ or "").strip()
            lines += [
                "",
                f"**{name}**: {section_doc}",
                "",
                "| key | type | default | meaning |",
                "|---|---|---|---|",
            ]
        shown = (
            "null" if default is None else yaml.safe_dump(_plain(default), default_flow_style=True).strip()
        )
        shown = shown.removesuffix("...").strip()
        lines.append(f"| `{key}` | {type_name.replace('|', '/')} | `{shown}` | {doc} |")
    return "\n".join(lines).strip() + "\n"


# ---------------------------------------------------------------------------------------------------------
# Internals


def compose_yaml_file(path: Path, what: str = "config file") -> yaml.Node | None:
    """The YAML node tree of ``path`` (it keeps line numbers), None for an empty file; an unreadable,
    non-UTF-8 or invalid file is an :class:`InputError` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        return yaml.compose(text)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {error}") from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Flat values of a YAML recipe and, for each key, ``"<file>, line <n>"``."""
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
            where = f"{path}, line {key_node.start_mark.line + 1}"
            if isinstance(value_node, yaml.MappingNode) and not prefix:
                walk(value_node, f"{key}.")
                continue
            values[key] = yaml.safe_load(yaml.serialize(value_node))
            origins[key] = where

    walk(root, "")
    return values, origins


def _build(
    cls: type, nested: Mapping[str, Mapping[str, tuple[Any, str]]], origins: Mapping[str, str]
) -> Config:
    section_types = typing.get_type_hints(cls)
    sections: dict[str, Any] = {}
    for section, items in nested.items():
        if section not in section_types:
            first_key = next(iter(items.values()))[1]
            raise InputError(
                f"{_where(first_key, origins)}: unknown section {section!r}{_suggest(first_key)}"
            )
        section_type = section_types[section]
        hints = typing.get_type_hints(section_type)
        kwargs = {}
        for name, (value, key) in items.items():
            if name not in hints:
                raise InputError(f"{_where(key, origins)}: unknown key {key!r}{_suggest(key)}")
            kwargs[name] = _coerce(value, hints[name], key, origins)
        sections[section] = section_type(**kwargs)
    config = cls(**sections)
    _validate(config)
    return config


def _coerce(value: Any, hint: Any, key: str, origins: Mapping[str, str]) -> Any:
    """``value`` as type ``hint``, or an :class:`InputError` naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def fail() -> typing.NoReturn:
        raise InputError(
            f"{_where(key, origins)}: {key} must be {_type_name(hint)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key, origins)
            except InputError:
                continue
        fail()
    if origin is Literal:
        if value in args:
            return value
        raise InputError(
            f"{_where(key, origins)}: {key} must be one of {', '.join(map(repr, args))}, got {value!r}"
        )
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, Iterable) or isinstance(value, Mapping):
            fail()
        items = list(value)
        if origin is tuple:
            if len(items) != len(args):
                fail()
            return tuple(_coerce(v, a, key, origins) for v, a in zip(items, args, strict=True))
        return [_coerce(v, args[0], key, origins) for v in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
        fail()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail()
        fail()
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        fail()
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _validate(config: Config) -> None:
    """Checks between fields, and ranges a type cannot express."""
    checks = [
        (config.loss.tau > 0, "loss.tau", "must be positive"),
        (
            config.loss.teacher_tau is None or config.loss.teacher_tau > 0,
            "loss.teacher_tau",
            "must be positive",
        ),
        (config.loss.lam >= 0, "loss.lam", "must not be negative"),
        (config.loss.hard_negatives >= 1, "loss.hard_negatives", "must be at least 1"),
        (config.optim.lr > 0, "optim.lr", "must be positive"),
        (0 <= config.optim.warmup_ratio < 1, "optim.warmup_ratio", "must be in [0, 1)"),
        (config.schedule.global_batch_size >= 2, "schedule.global_batch_size", "must be at least 2"),
        (config.schedule.epochs >= 1, "schedule.epochs", "must be at least 1"),
        (
            config.schedule.max_steps is None or config.schedule.max_steps >= 1,
            "schedule.max_steps",
            "must be >= 1",
        ),
        (config.schedule.log_every >= 1, "schedule.log_every", "must be at least 1"),
        (config.schedule.eval_every >= 1, "schedule.eval_every", "must be at least 1"),
        (
            config.schedule.patience is None or config.schedule.patience >= 1,
            "schedule.patience",
            "must be >= 1",
        ),
        (config.scaling.num_workers >= 1, "scaling.num_workers", "must be at least 1"),
        (config.scaling.max_failures >= 0, "scaling.max_failures", "must not be negative"),
        (config.scaling.micro_batch_size >= 1, "scaling.micro_batch_size", "must be at least 1"),
        (config.model.max_length >= 8, "model.max_length", "must be at least 8"),
        (len(config.data.languages) >= 2, "data.languages", "must name at least two languages"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise InputError(f"{key} {message}")
    if config.schedule.global_batch_size % config.scaling.num_workers:
        raise InputError(
            f"schedule.global_batch_size ({config.schedule.global_batch_size}) must be divisible by "
            f"scaling.num_workers ({config.scaling.num_workers}): every worker takes an equal slice"
        )


def _where(key: str, origins: Mapping[str, str]) -> str:
    return origins.get(key, "config")


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _attribute_docs(cls: type) -> dict[str, str]:
    """The string literal under each dataclass field (``field: T = x`` then ``\"\"\"doc\"\"\"``)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs
