"""Evaluate a model with a named suite: the one entry point for the CLI and for the end of training.

``suite="paper"`` runs :func:`imascl_ray.eval.mteb_suite.run_paper_suite`; ``suite="local"`` runs
:func:`imascl_ray.eval.local_suite.evaluate_pair_groups` on pair files in the corpus format. Both give
back the JSON-ready results and the same numbers as flat MLflow metrics, e.g.::

    outcome = evaluate_model("runs/best/export", "local", pair_files=["heldout.tsv"])
    log_metrics(outcome.metrics, run_id=run_id)            # imascl_ray.tracking.metrics

Model and corpus loading (``imascl_ray.encoder`` / ``imascl_ray.data``) happen inside the calls, and
both can be replaced (``load_encoder=`` / ``read_corpus=``) by tests or other callers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imascl_ray.errors import InputError

SUITES = ("paper", "local")


@dataclass
class EvalOutcome:
    """What one evaluation produced: the suite, its JSON-ready results and the flat metrics."""

    suite: str
    results: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    structure: dict[str, float] = field(default_factory=dict)
    """With a reference model, the local suite's ``{language: rho, "mean": ...}`` (see
    :mod:`imascl_ray.eval.structure`)."""


def load_sentence_encoder(model: str, *, prefix: str | None = None) -> Any:
    """``SentenceEncoder.from_pretrained(model, prefix=prefix)``; ``prefix=None`` keeps the folder's own."""
    from imascl_ray.encoder import SentenceEncoder

    return SentenceEncoder.from_pretrained(model, prefix=prefix)


def read_pair_groups(
    paths: Sequence[str | Path], read_corpus: Callable[[Path], Any] | None = None
) -> dict[str, tuple[list[str], list[str]]]:
    """The language-pair groups of one or more pair files, a pair found in several files concatenated."""
    files = [Path(path) for path in paths]
    for path in files:
        if not path.is_file():
            raise InputError(f"{path}: pair file not found")
    if read_corpus is None:
        from imascl_ray.data import read_corpus

    groups: dict[str, tuple[list[str], list[str]]] = {}
    for path in files:
        for pair, (sources, targets) in read_corpus(path).groups().items():
            merged = groups.setdefault(pair, ([], []))
            merged[0].extend(sources)
            merged[1].extend(targets)
    if not groups:
        raise InputError(f"no sentence pairs in {', '.join(map(str, paths))}")
    return groups


def run_suite(
    encoder: Any,
    suite: str,
    *,
    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]] | None = None,
    tasks: Sequence[Any] | None = None,
    k: int = 4,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
    reference: Any | None = None,
) -> EvalOutcome:
    """Run ``suite`` on an already loaded ``encoder`` (anything with ``encode(texts) -> Tensor``).

    ``groups`` (``Corpus.groups()``) is required for ``local``; ``tasks`` optionally replaces the mteb
    task objects of ``paper`` (e.g. with locally injected data). With a ``reference`` encoder (or its
    :func:`~imascl_ray.eval.structure.reference_embeddings`), the local suite also measures the
    monolingual structure kept, per language, as ``local/structure/<lang>``.
    """
    if suite == "local":
        from imascl_ray.eval.local_suite import EncodeOnce, evaluate_pair_groups, flatten_local

        if not groups:
            raise InputError("the local suite needs pair files (--pairs FILE ...)")
        encoder = EncodeOnce(encoder)  # groups share sentences, and the structure re-reads them
        results = evaluate_pair_groups(encoder, groups, k=k, device=device)
        outcome = EvalOutcome("local", results, flatten_local(results))
        if reference is not None:
            from imascl_ray.eval.structure import flatten_structure, monolingual_structure

            outcome.structure = monolingual_structure(encoder, reference, groups)
            outcome.metrics.update(flatten_structure(outcome.structure))
        return outcome
    if suite == "paper":
        from imascl_ray.eval.mteb_suite import flatten_paper, run_paper_suite

        result = run_paper_suite(
            encoder,
            name=str(getattr(encoder, "name", "local/model")),
            revision=str(getattr(encoder, "revision", "unknown")),
            embedding_dim=getattr(encoder, "embedding_dim", None),
            tasks=tasks,
            k=k,
            batch_size=batch_size,
            device=device,
            show_progress=show_progress,
        )
        return EvalOutcome("paper", result, flatten_paper(result))
    raise InputError(f"unknown evaluation suite {suite!r}; choose one of {', '.join(SUITES)}")


def evaluate_model(
    model: str | Path,
    suite: str,
    *,
    pair_files: Sequence[str | Path] | None = None,
    prefix: str | None = None,
    k: int = 4,
    batch_size: int = 64,
    device: str | None = None,
    tasks: Sequence[Any] | None = None,
    show_progress: bool = True,
    load_encoder: Callable[..., Any] | None = None,
    read_corpus: Callable[[Path], Any] | None = None,
    reference: str | Path | None = None,
) -> EvalOutcome:
    """Load ``model`` (hub id, plain HF folder or exported run) and run ``suite`` on it.

    This is what the end of ``imascl-ray train`` and of each Tune trial calls on the exported best
    model; ``outcome.metrics`` go to the run with :func:`imascl_ray.tracking.metrics.log_metrics`.
    ``reference`` (a model, e.g. the pretrained student) adds the local suite's monolingual structure.
    """
    if suite not in SUITES:
        raise InputError(f"unknown evaluation suite {suite!r}; choose one of {', '.join(SUITES)}")
    groups = read_pair_groups(pair_files or [], read_corpus) if suite == "local" else None
    if suite == "local" and not pair_files:
        raise InputError("the local suite needs pair files (--pairs FILE ...)")
    encoder = (load_encoder or load_sentence_encoder)(str(model), prefix=prefix)
    reference_encoder = None
    if reference is not None and suite == "local":
        reference_encoder = (load_encoder or load_sentence_encoder)(str(reference), prefix=prefix)
    return run_suite(
        encoder,
        suite,
        groups=groups,
        tasks=tasks,
        k=k,
        batch_size=batch_size,
        device=device,
        show_progress=show_progress,
        reference=reference_encoder,
    )


def evaluate_model_metrics(model: str | Path, suite: str, **kwargs: Any) -> dict[str, float]:
    """:func:`evaluate_model`, flat metrics only (``{"tatoeba/fra-eng/acc": ..., ...}``)."""
    return evaluate_model(model, suite, **kwargs).metrics
