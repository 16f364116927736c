"""``imascl-ray eval MODEL``: the paper's benchmarks through mteb (``--suite paper``) or held-out pair files
(``--pairs FILE ...``), printed, written as JSON / Markdown, and logged to MLflow when asked."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

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
    parser.add_argument("--output", default=None, metavar="PATH", help="write the results as JSON here")
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
    from imascl_ray.eval.report import local_terminal, paper_markdown, paper_terminal, write_json
    from imascl_ray.eval.runner import evaluate_model
    from imascl_ray.eval.tracking import log_metrics

    if args.margin_k < 1:
        raise InputError(f"--margin-k must be at least 1, got {args.margin_k}")
    if args.markdown and not args.suite:
        raise InputError("--markdown needs --suite paper (the local suite prints its own table)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    suite = "paper" if args.suite else "local"
    outcome = evaluate_model(
        args.model,
        suite,
        pair_files=args.pairs,
        prefix=args.prefix,
        k=args.margin_k,
        batch_size=args.batch_size,
        device=args.device,
        tasks=tasks,
        load_encoder=load_encoder or load_checked_encoder,
        read_corpus=read_corpus,
    )
    if suite == "paper":
        print(paper_terminal(outcome.results))
        if args.markdown:
            from pathlib import Path

            target = Path(args.markdown)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(paper_markdown(outcome.results), encoding="utf-8")
            print(f"markdown: {target}")
    else:
        print(local_terminal(outcome.results))
    if args.output:
        print(f"results: {write_json(outcome.results, args.output)}")
    if args.mlflow_run_id or args.mlflow_experiment:
        run_id = log_metrics(
            outcome.metrics,
            run_id=args.mlflow_run_id,
            experiment=args.mlflow_experiment,
            run_name=f"eval {args.model}",
            tracking_uri=args.tracking_uri,
            tags={"imascl.eval.suite": suite, "imascl.eval.model": str(args.model)},
        )
        print(f"mlflow: {len(outcome.metrics)} metrics logged to run {run_id}")
    return 0
