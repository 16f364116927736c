"""``imascl-ray eval MODEL``: the paper's benchmarks through mteb (``--suite paper``) or held-out pair files
(``--pairs FILE ...``), printed, written as JSON / Markdown, and logged to MLflow when asked.

With ``--baseline MODEL0`` the starting model is evaluated the same way, and a figure of both (per
language pair, both directions, :mod:`imascl_ray.eval.figure`) is written next to the table
(``--figure``, default: the ``--output`` or ``--markdown`` path with ``.png``) and logged to the
MLflow run; without a baseline the figure shows MODEL alone."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIGURE_ARTIFACT = "figures/before_after.png"
"""Where the figure goes among the MLflow run's artifacts."""

NAME = "eval"
HELP = (
    "Evaluate a model: the paper suite through mteb (Tatoeba, BUCC, FLORES xSIM, STS) or bitext "
    "accuracy, margin accuracy and xSIM on held-out pair files."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, one of ``--suite``/``--pairs``, and output/MLflow options."""
    parser.add_argument("model", metavar="MODEL", help="a hub id, a local model folder or an exported run")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", choices=["paper"], help="run the paper's benchmarks through mteb")
    which.add_argument(
        "--pairs",
        nargs="+",
        metavar="FILE",
        help="held-out pair files in the corpus format (TSV/JSONL/Parquet)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        metavar="TEXT",
        help="text prepended to every input (default: the one the model folder records)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="MODEL0",
        help="also evaluate this model (the starting point) and draw both in the figure",
    )
    parser.add_argument("--output", default=None, metavar="PATH", help="write the results as JSON here")
    parser.add_argument(
        "--figure",
        default=None,
        metavar="PATH",
        help="write the before/after PNG here (default: next to --output or --markdown, as .png)",
    )
    parser.add_argument(
        "--markdown",
        default=None,
        metavar="PATH",
        help="with --suite paper: write the paper-style Markdown tables here",
    )
    parser.add_argument(
        "--margin-k",
        type=int,
        default=4,
        metavar="K",
        help="neighbours in the ratio margin / xSIM (default: 4, as LASER)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="encoding batch size for mteb (default: 64)"
    )
    parser.add_argument("--device", default=None, help="device for retrieval (default: cuda when available)")
    parser.add_argument(
        "--mlflow-run-id", default=None, metavar="ID", help="log the metrics to this MLflow run"
    )
    parser.add_argument(
        "--mlflow-experiment",
        default=None,
        metavar="NAME",
        help="log the metrics to a new run in this MLflow experiment",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or MLflow's default)",
    )


def check_model_reference(model: str) -> None:
    """A model that is neither a path here nor a hub id is one clear line, not the hub client's traceback."""
    from pathlib import Path

    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from imascl_ray.errors import InputError

    if Path(model).exists():
        check_model_weights(Path(model))
        return
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise InputError(
            f"{model}: no such model folder, and not a Hugging Face hub id (name or namespace/name)"
        ) from None
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise InputError(
            f"{model}: no such model folder, and the hub is offline (HF_HUB_OFFLINE) with no copy"
        )


def check_model_weights(folder: Path) -> None:
    """Every ``*.safetensors`` file of a model folder has a sound header that covers the whole file: a
    truncated or overwritten weights file is one line naming it, not safetensors' traceback from deep
    inside transformers (``train`` checks its models through :func:`check_model_reference` too)."""
    from safetensors import SafetensorError, safe_open

    from imascl_ray.errors import InputError

    files = [folder] if folder.is_file() else sorted(folder.rglob("*.safetensors"))
    for path in files:
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(path), framework="pt"):
                pass  # opening reads and checks the header against the file's length
        except (SafetensorError, OSError) as error:
            raise InputError(
                f"{path}: not a readable safetensors file ({error}); the model folder is damaged: "
                "copy or export it again"
            ) from None


def load_checked_encoder(model: str, *, prefix: str | None = None) -> Any:
    """The real loader, after :func:`check_model_reference` (the pair files have been read by then)."""
    from imascl_ray.eval.runner import load_sentence_encoder

    check_model_reference(model)
    return load_sentence_encoder(model, prefix=prefix)


def run(args: argparse.Namespace) -> int:
    """Evaluate with the real model and corpus loaders."""
    return execute(args)


def execute(
    args: argparse.Namespace,
    *,
    load_encoder: Callable[..., Any] | None = None,
    read_corpus: Callable[..., Any] | None = None,
    tasks: Any = None,
) -> int:
    """The command's work; the model/corpus loaders and the mteb tasks can be injected (tests)."""
    from imascl_ray.errors import InputError
    from imascl_ray.eval.bitext import few_candidates_warning
    from imascl_ray.eval.report import local_terminal, paper_markdown, paper_terminal, write_json
    from imascl_ray.eval.runner import evaluate_model
    from imascl_ray.tracking import tags
    from imascl_ray.tracking.metrics import log_metrics
    from imascl_ray.tracking.models import log_figure

    if args.margin_k < 1:
        raise InputError(f"--margin-k must be at least 1, got {args.margin_k}")
    if args.markdown and not args.suite:
        raise InputError("--markdown needs --suite paper (the local suite prints its own table)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    suite = "paper" if args.suite else "local"

    def evaluate(model: str, reference: str | None = None):
        from imascl_ray.preparation import resolve_model  # offline:multilingual-e5-small -> its folder

        return evaluate_model(
            resolve_model(model),
            suite,
            pair_files=args.pairs,
            prefix=args.prefix,
            k=args.margin_k,
            batch_size=args.batch_size,
            device=args.device,
            tasks=tasks,
            load_encoder=load_encoder or load_checked_encoder,
            read_corpus=read_corpus,
            reference=resolve_model(reference) if reference else None,
        )

    baseline = evaluate(args.baseline) if args.baseline else None
    # With a baseline, the local suite also says how much of its monolingual structure the model kept.
    outcome = evaluate(args.model, args.baseline if suite == "local" else None)
    if suite == "paper":
        print(paper_terminal(outcome.results))
        if args.markdown:
            target = Path(args.markdown)
            target.parent.mkdir(parents=True, exist_ok=True)
            runs = [baseline.results, outcome.results] if baseline else outcome.results
            target.write_text(paper_markdown(runs), encoding="utf-8")
            print(f"markdown: {target}")
    else:
        if baseline is not None:
            print(f"baseline {args.baseline}:\n{local_terminal(baseline.results)}\n\n{args.model}:")
        print(local_terminal(outcome.results))
        warning = few_candidates_warning({pair: int(scores["n"]) for pair, scores in outcome.results.items()})
        if warning is not None:
            print(warning, file=sys.stderr)
        if outcome.structure:
            from imascl_ray.eval.structure import describe_structure

            print(describe_structure(outcome.structure, "model vs baseline"))
    if args.output:
        written = {"baseline": baseline.results, "model": outcome.results} if baseline else outcome.results
        if outcome.structure:
            written["monolingual_structure"] = outcome.structure
        print(f"results: {write_json(written, args.output)}")
    figure = _figure(args, outcome.results, baseline.results if baseline else None)
    if args.mlflow_run_id or args.mlflow_experiment:
        metrics = dict(outcome.metrics)
        if baseline is not None:
            metrics |= {f"baseline/{key}": value for key, value in baseline.metrics.items()}
        run_id = log_metrics(
            metrics,
            run_id=args.mlflow_run_id,
            experiment=args.mlflow_experiment,
            run_name=f"eval {args.model}",
            tracking_uri=args.tracking_uri,
            tags={tags.EVAL_SUITE: suite, tags.EVAL_MODEL: str(args.model)},
        )
        if figure is not None:
            log_figure(args.tracking_uri, run_id, figure, FIGURE_ARTIFACT)
        print(f"mlflow: {len(metrics)} metrics logged to run {run_id}")
    return 0


def _figure(args: argparse.Namespace, results: Any, baseline: Any) -> Any:
    """The before/after figure (None when there is nowhere to put it or nothing to draw), written to
    ``--figure`` or next to ``--output`` / ``--markdown``."""
    from imascl_ray.eval.figure import before_after_figure, bitext_directions, write_figure

    mlflow = bool(args.mlflow_run_id or args.mlflow_experiment)
    table = args.output or args.markdown
    target = Path(args.figure) if args.figure else (Path(table).with_suffix(".png") if table else None)
    if (target is None and not mlflow) or not bitext_directions(results):
        return None
    labels = (
        f"baseline ({Path(args.baseline).name})" if args.baseline else "baseline",
        Path(args.model).name,
    )
    figure = before_after_figure(results, baseline, labels=labels)
    if target is not None:
        print(f"figure: {write_figure(figure, target)}")
    return figure
