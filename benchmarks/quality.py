"""Where do soft labels win? A seeded study of every loss at equal steps and batch, in and out of domain.

Arms (each trained by the project's own trainer, ``run_training`` on a local Ray cluster, from the same
pretrained student, with the same data, steps, batch and learning rate):

=================  ==========================================================
``pretrained``     the student before training (no seed: evaluated once)
``teacher``        with a cut student only: the whole model that teaches it (evaluated once)
``hard``           ``loss.name=infonce`` (LaBSE / mE5-style hard labels)
``soft``           ``loss.name=soft loss.labels=priority loss.tms=false``
``soft_tms``       ``loss.name=soft loss.labels=priority loss.tms=true`` (the paper's best rows)
``soft_average``   ``loss.name=soft loss.labels=average loss.tms=false``
``mse``            ``loss.name=mse`` (Reimers & Gurevych 2020)
=================  ==========================================================

Each trained model is evaluated on

* the **in-domain** test pairs (held out of the same system catalogues as training), and
* the **out-of-domain** set: the ``django`` and ``sphinx`` packages' catalogues, deduplicated against
  the whole training corpus on both sides (:mod:`imascl_ray.data.out_of_domain`),

with bitext accuracy both ways, margin accuracy, and the **monolingual structure** kept (Spearman of the
model's and the whole pretrained model's within-language cosines, :mod:`imascl_ray.eval.structure`). The
table gives the mean and spread (sample standard deviation) over seeds (``schedule.seed``: batch order
and dropout; the splits stay the same, so every arm sees the same test sets). The last stdout line is
one JSON object with ``soft_minus_hard_bitext`` (out of domain, ``soft`` minus ``hard``, points of
accuracy), ``soft_minus_hard_structure`` (``soft_tms`` minus ``hard``, rho), every arm minus ``hard``
and the targets.

Regimes: ``short`` (about one epoch of the quickstart's corpus) and ``long`` (many epochs over a small
cap of pairs per language pair: where the paper saw hard labels overfit the translation pairs).

``--quick`` is sized for the 2-core machine: 60 steps, one pass over 500 pairs a language pair, on one
Ray Train worker that has every core, and a **cut student**: multilingual-e5-small's
embeddings (its vocabulary trimmed to the study's sentences) and first ``--student-layers`` (4)
transformer layers, taught by the whole model (the teacher, and MSE's target): distillation into a
smaller model. The structure's reference is the whole pretrained model in every mode (with the whole
student that is the student itself, and the ``pretrained`` row scores 1.0); with a cut student the
table adds the structure against the untrained cut student (``structure_student``).

    python benchmarks/quality.py --quick                   # 2 seeds, one epoch, cut student, ~15 min
    python benchmarks/quality.py --quick --student-layers 0   # the same with the whole student
    python benchmarks/quality.py --regime long --seeds 2   # 10 epochs over 200 pairs per language pair
    python benchmarks/quality.py --smoke                   # tiny random model, seconds (tests)
    python benchmarks/quality.py --quick --sweep SWEEP_DIR # the sweep's best soft and hard, and hard at
                                                           # the best soft trial's tau
    python benchmarks/quality.py --quick --arms hard,cold --arm cold=loss.name=soft,loss.tau=0.025
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, log, machine, rounded, set_test_environment

ARMS: dict[str, list[str]] = {
    "hard": ["loss.name=infonce", "loss.tms=false"],
    "soft": ["loss.name=soft", "loss.labels=priority", "loss.tms=false"],
    "soft_tms": ["loss.name=soft", "loss.labels=priority", "loss.tms=true"],
    "soft_average": ["loss.name=soft", "loss.labels=average", "loss.tms=false"],
    "mse": ["loss.name=mse", "loss.tms=false"],
}
"""The trained arms and the overrides that make each one (on top of the shared base)."""

QUICK_STUDENT_LAYERS = 4
"""``--quick``'s student: mE5-small's first 4 of 12 layers (a step is ~3x cheaper; the embedding table,
frozen, stays whole)."""

TARGETS = {"soft_minus_hard_bitext": 1.0, "soft_minus_hard_structure": 0.15}
"""Out of domain, mean over seeds: points of bitext accuracy, and rho of monolingual structure."""

REGIMES = {
    # one pass over 1,500 pairs per language pair (4 pairs) at 32 pairs a step is ~190 steps
    "short": {"cap": 1500, "steps": 150, "eval_every": 50},
    # 200 pairs per language pair: 25 steps an epoch; 250 steps are 10 epochs. One validation, at the
    # end: the model evaluated is the one after 10 epochs (as the paper's), not an earlier best one.
    "long": {"cap": 200, "steps": 250, "eval_every": 250},
}
QUICK_SHORT_REGIME = {"cap": 500, "steps": 60, "eval_every": 60}
"""``--quick``'s short regime: 60 steps of 32 pairs are about one pass over 500 pairs a language pair, as
the short regime's 150 steps are over its 1,500 (which at 60 steps would triple the teacher cache for
pairs never read)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, 60 steps over 500 pairs a language pair, one worker, one validation, 200 test "
        "pairs a language pair, the cut student (--student-layers)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny random model and corpus (tests)")
    parser.add_argument("--regime", choices=sorted(REGIMES), default="short")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 2; 3 full)")
    parser.add_argument("--steps", type=int, default=None, help="override the regime's steps")
    parser.add_argument(
        "--arms",
        default=None,
        help="comma-separated arms (default: all; with --sweep: hard, soft_tms, sweep_soft, sweep_hard)",
    )
    parser.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="NAME=OVERRIDE[,OVERRIDE...]",
        help="an arm of your own (repeatable), e.g. hard_cold=loss.name=infonce,loss.tau=0.025",
    )
    parser.add_argument(
        "--student-layers",
        type=int,
        default=None,
        help="train mE5-small cut to its first N transformer layers, taught by the whole model "
        "(default: 4 with --quick, else 0: the whole model)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Ray Train workers, sharing this machine's cores (default: 1 with --quick, else 2)",
    )
    parser.add_argument("--work-dir", default=None, help="keep runs here (default: a temporary folder)")
    parser.add_argument(
        "--sweep",
        default=None,
        help="a soft_vs_hard sweep's folder (or its trials.csv): arms sweep_soft and sweep_hard, "
        "the best soft and the best hard trial's settings, trained again at every seed",
    )
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (1 if args.smoke else 2 if args.quick else 3)
    # --quick on a small machine: one worker on every core steps faster than two on one core each
    # (no gloo all-gather, one process to start; the loss is the same, its negatives the global batch)
    if args.workers is None:
        args.workers = 1 if args.quick and not args.smoke else 2
    if args.workers < 1:
        parser.error("--workers: 1 or more")
    if args.student_layers is None and args.quick and not args.smoke:
        args.student_layers = QUICK_STUDENT_LAYERS
    if args.student_layers is not None and args.student_layers < 0:
        parser.error("--student-layers: 0 (the whole model) or more")
    args.student_layers = args.student_layers or None  # 0: the whole model, as the full study trains
    args.arm_overrides = dict(ARMS)
    default_arms = list(ARMS)
    custom = []
    for definition in args.arm:
        try:
            name, overrides = parse_arm(definition)
        except ValueError as error:
            parser.error(f"--arm {definition!r}: {error}")
        args.arm_overrides[name] = overrides
        custom.append(name)
    if args.sweep:
        try:
            found = sweep_arms(Path(args.sweep))
        except (OSError, ValueError) as error:
            parser.error(f"--sweep: {error}")
        args.arm_overrides.update(found)
        default_arms = ["hard", "soft_tms", *found]
    args.arms = args.arms or ",".join([*default_arms, *custom])
    unknown = set(args.arms.split(",")) - set(args.arm_overrides)
    if unknown:
        choices = ", ".join(args.arm_overrides)
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))}; choose from {choices}")
    return args


def parse_arm(definition: str) -> tuple[str, list[str]]:
    """``"name=key=value,key=value"`` as ``("name", ["key=value", "key=value"])`` (``--arm``)."""
    name, _, rest = definition.partition("=")
    overrides = [part.strip() for part in rest.split(",") if part.strip()]
    if not name.isidentifier() or name in ("pretrained", "teacher"):
        raise ValueError("the arm's name must be a word other than pretrained or teacher, before the =")
    malformed = [part for part in overrides if "=" not in part]
    if not overrides or malformed:
        raise ValueError(f"expected overrides like loss.tau=0.05 after the name, got {malformed or rest!r}")
    return name, overrides


def sweep_arms(path: Path) -> dict[str, list[str]]:
    """``{"sweep_soft", "sweep_hard", "sweep_hard_same_tau"}``: the searched values of the best-ranked
    soft trial, of the best-ranked hard (``infonce``) trial, and hard InfoNCE at the best soft trial's
    student temperature, from a sweep's ``trials.csv``.

    The third arm separates the two things the best soft trial may change at once: its labels, and a
    colder student ``loss.tau`` than the best hard trial's (the sweep samples them independently).

    The CSV (:func:`imascl_ray.tune.results.write_csv`) lists the trials best first; the searched keys
    are its columns between ``status`` and the metric's ``best ...`` column; unranked rows ("-": failed
    or not run) are skipped.
    """
    csv_path = path / "trials.csv" if path.is_dir() else path
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = [row for row in reader if row.get("rank", "-") != "-"]
    if "status" not in header or not any(key.startswith("best ") for key in header):
        raise ValueError(f"{csv_path} is not a sweep's trials.csv (no status and best columns)")
    end = next(i for i, key in enumerate(header) if key.startswith("best "))
    searched = header[header.index("status") + 1 : end]
    if "loss.name" not in searched:
        raise ValueError(f"{csv_path}: the sweep did not search loss.name (soft against infonce)")
    arms: dict[str, list[str]] = {}
    for arm, loss in (("sweep_soft", "soft"), ("sweep_hard", "infonce")):
        best = next((row for row in rows if row["loss.name"] == loss), None)
        if best is None:
            raise ValueError(f"{csv_path}: no ranked trial with loss.name={loss}")
        arms[arm] = [f"{key}={best[key]}" for key in searched if best[key] != ""]
    soft_tau = next((item for item in arms["sweep_soft"] if item.startswith("loss.tau=")), None)
    if soft_tau is not None:
        arms["sweep_hard_same_tau"] = ["loss.name=infonce", "loss.tms=false", soft_tau]
    return arms


def base_overrides(args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    """The overrides every arm shares, and the whole pretrained model (the student, or the teacher of
    a cut student; the structure's reference either way)."""
    regime = dict(QUICK_SHORT_REGIME if args.quick and args.regime == "short" else REGIMES[args.regime])
    if args.quick:
        regime.update(steps=min(regime["steps"], 60))
    if args.smoke:
        regime.update(steps=8, eval_every=4)
    if args.steps:
        regime["steps"] = args.steps
    if args.quick:  # one validation, at the end: the model evaluated is the one after its last step
        regime["eval_every"] = regime["steps"]
    common = [
        f"tracking.output_dir={work}",
        "tracking.experiment=quality",
        "eval.suite=none",
        "tracking.log_model=false",  # the benchmark evaluates each <run>/model itself
        f"scaling.num_workers={args.workers}",
        f"scaling.cpus_per_worker={max(1, (os.cpu_count() or 1) // args.workers)}",  # every core at work
        f"schedule.max_steps={regime['steps']}",
        f"schedule.eval_every={regime['eval_every']}",
        "schedule.log_every=10",
    ]
    if args.smoke:
        from imascl_ray.data import write_corpus
        from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

        model = str(build_tiny_model(work / "tiny-model"))
        corpus = write_corpus(synthetic_parallel_corpus(240), work / "tiny-corpus.parquet")
        return (
            [
                *common,
                f"model.name={model}",
                f"data.corpus={corpus}",
                "data.languages=[en,fr]",
                "data.pair_set=en-fr",
                "data.max_pairs_per_language_pair=120",
                "data.validation_pairs=40",
                "data.test_pairs=40",
                "model.max_length=32",
                "teacher.max_length=32",
                "schedule.global_batch_size=16",
            ],
            model,
        )

    from imascl_ray.preparation import resolve_model

    return (
        [
            *common,
            f"data.max_pairs_per_language_pair={regime['cap']}",
            f"data.test_pairs={200 if args.quick else 500}",
            # --quick and the long regime validate on 300 candidates a pair (cheaper; the same for every arm)
            *(["data.validation_pairs=300"] if args.quick or args.regime == "long" else []),
        ],
        resolve_model("offline:multilingual-e5-small"),
    )


def out_of_domain(args: argparse.Namespace, work: Path, config) -> tuple[Any, list[str]]:
    """The out-of-domain corpus, and every sentence of the training corpus it was deduplicated against
    (smoke: a synthetic corpus of other sentences, and the synthetic training corpus's)."""
    if args.smoke:
        from imascl_ray.data import read_corpus
        from imascl_ray.testing import synthetic_parallel_corpus

        return synthetic_parallel_corpus(60, seed=99), read_corpus(config.data.corpus).sentences()
    from imascl_ray.data import write_corpus
    from imascl_ray.data.out_of_domain import DEFAULT_SOURCES, build_out_of_domain_corpus, training_sentences

    languages = list(config.data.languages)
    seen = training_sentences("gettext", languages)
    corpus, _, dropped = build_out_of_domain_corpus(
        DEFAULT_SOURCES, languages, config.data.pair_set, exclude={"gettext": seen}
    )
    write_corpus(corpus, work / "out-of-domain.parquet")
    log(f"out-of-domain set: {corpus.pair_counts()} ({dropped.dropped} pairs dropped as seen in training)")
    return corpus, seen


def cut_student(model, whole: str, layers: int, texts: list[str], work: Path) -> str:
    """``whole`` cut to its first ``layers`` transformer layers, its vocabulary trimmed to the pieces of
    ``texts`` (every sentence the study trains or evaluates on: the same embeddings there, and a word
    table a tenth the size to load, checkpoint and export in every arm). ``model`` is the run's
    ``config.model`` (prefix and length, as the trainer loads the student)."""
    from imascl_ray.preparation.student import load_student
    from imascl_ray.vocab import trim_vocabulary

    student = load_student(model, whole)  # cut and trimmed in memory: one folder written, not two
    student.model.encoder.layer = student.model.encoder.layer[:layers]
    student.model.config.num_hidden_layers = len(student.model.encoder.layer)
    trimmed = trim_vocabulary(student, texts)  # in place
    kept = f"{trimmed.new_vocab_size:,} of {trimmed.old_vocab_size:,} pieces"
    log(f"student: the first {layers} layers of {Path(whole).name}, {kept}")
    return str(student.save(work / f"student-{layers}-layers"))


def embed_sets(model, groups: dict[str, dict]) -> dict[str, dict]:
    """``{set: {language: embeddings}}``: a structure reference's embeddings of every held-out set."""
    from imascl_ray.eval.structure import reference_embeddings

    return {name: reference_embeddings(model, pair_groups) for name, pair_groups in groups.items()}


def evaluate(encoder, references: dict[str, dict], groups: dict[str, dict]) -> dict[str, float]:
    """Bitext accuracy, margin accuracy (mean over pairs, in points) and structure, per held-out set.

    ``references`` maps a metric name to its reference model's embeddings of each set's sentences:
    ``structure`` (the whole pretrained model) and, with a cut student, ``structure_student`` (the cut
    student before training: the issue's default reference, how far training moved the geometry).
    """
    from imascl_ray.eval.local_suite import EncodeOnce, evaluate_pair_groups
    from imascl_ray.eval.structure import monolingual_structure

    encoder = EncodeOnce(encoder)  # each sentence once: the sets share English, structure re-reads them
    scores: dict[str, float] = {}
    for name, pair_groups in groups.items():
        results = evaluate_pair_groups(encoder, pair_groups)
        for key, short in (("accuracy", "acc"), ("margin_accuracy", "margin_acc")):
            scores[f"{name}/{short}"] = 100 * statistics.fmean(entry[key] for entry in results.values())
        for direction in ("src_to_tgt", "tgt_to_src"):
            values = [entry[f"accuracy_{direction}"] for entry in results.values()]
            scores[f"{name}/acc_{direction}"] = 100 * statistics.fmean(values)
        for metric, reference in references.items():
            scores[f"{name}/{metric}"] = monolingual_structure(encoder, reference[name], pair_groups)["mean"]
    return scores


def summarise(scores: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{arm: {metric: {"mean", "spread", "n"}}}`` over the seeds of each arm."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for arm, runs in scores.items():
        summary[arm] = {}
        for metric in runs[0]:
            values = [run[metric] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[arm][metric] = {
                "mean": values and statistics.fmean(values),
                "spread": spread,
                "n": len(values),
            }
    return summary


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The paper-style table: one row per arm, mean ± spread over seeds."""
    columns = [
        ("in-domain acc", "test/acc"),
        ("ood acc", "ood/acc"),
        ("ood en→xx", "ood/acc_src_to_tgt"),
        ("ood xx→en", "ood/acc_tgt_to_src"),
        ("ood margin acc", "ood/margin_acc"),
        ("in-domain structure", "test/structure"),
        ("ood structure", "ood/structure"),
    ]
    if any("ood/structure_student" in metrics for metrics in summary.values()):  # a cut student
        columns.append(("ood structure vs the untrained student", "ood/structure_student"))
    lines = ["| arm | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for arm, metrics in summary.items():
        cells = []
        for _, key in columns:
            entry = metrics[key]
            digits = 3 if "structure" in key else 1
            cell = f"{entry['mean']:.{digits}f}"
            if entry["n"] > 1:
                cell += f" ± {entry['spread']:.{digits}f}"
            cells.append(cell)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    from imascl_ray.config import load_config, resolve_recipe
    from imascl_ray.data import read_corpus
    from imascl_ray.eval.local_suite import EncodeOnce
    from imascl_ray.eval.runner import load_sentence_encoder
    from imascl_ray.train.session import ray_session
    from imascl_ray.train.trainer import run_training

    arms = args.arms.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imascl-quality-") as scratch:
        work = Path(args.work_dir or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        common, reference_name = base_overrides(args, work)
        pretrained_name = reference_name
        recipe = resolve_recipe("quickstart")
        base = load_config(recipe, common)
        ood, seen = out_of_domain(args, work, base)
        groups: dict[str, dict] = {"ood": ood.groups()}
        if args.student_layers is not None:  # the cut student learns from the whole model
            texts = [*seen, *ood.sentences()]
            pretrained_name = cut_student(base.model, reference_name, args.student_layers, texts, work)
            common += [f"model.name={pretrained_name}", f"teacher.name={reference_name}"]
        # Each kept for the whole study: the structure references' embeddings are the same rows as the
        # pretrained and teacher rows' scores read, so each of those sentences is embedded once.
        pretrained = EncodeOnce(load_sentence_encoder(pretrained_name))
        cut = pretrained_name != reference_name
        reference_model = EncodeOnce(load_sentence_encoder(reference_name)) if cut else pretrained
        scores: dict[str, list[dict[str, float]]] = {}
        with ray_session(None, base):
            for seed in range(args.seeds):
                for arm in arms:
                    arm_overrides = args.arm_overrides[arm]
                    config = load_config(recipe, [*common, *arm_overrides, f"schedule.seed={1000 + seed}"])
                    log(
                        f"seed {seed + 1}/{args.seeds}, arm {arm}: training {config.schedule.max_steps} steps"
                    )
                    arm_started = time.perf_counter()
                    outcome = run_training(config, run_name=f"{args.regime}-{arm}-seed{seed}", evaluate=False)
                    trained_s = time.perf_counter() - arm_started
                    if "test" not in groups:  # the splits are the same for every arm and seed
                        groups["test"] = read_corpus(outcome.run_dir / "data" / "test.parquet").groups()
                        reference = {"structure": embed_sets(reference_model, groups)}
                        if cut:
                            reference["structure_student"] = embed_sets(pretrained, groups)
                        scores["pretrained"] = [evaluate(pretrained, reference, groups)]
                        if cut:  # where the cut student's teacher stands
                            scores["teacher"] = [evaluate(reference_model, reference, groups)]
                    scores.setdefault(arm, []).append(
                        evaluate(load_sentence_encoder(str(outcome.model_dir)), reference, groups)
                    )
                    log(f"  {arm}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[arm][-1].items()))
                    evaluated_s = time.perf_counter() - arm_started - trained_s
                    log(f"  {arm}: trained in {trained_s:.0f} s, evaluated in {evaluated_s:.0f} s")
    summary = summarise(scores)  # pretrained (and teacher) first: they were scored first
    print(table(summary))
    result: dict[str, Any] = {
        "benchmark": "quality",
        "regime": args.regime,
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "seeds": args.seeds,
        "steps": base.schedule.max_steps,
        "global_batch": base.schedule.global_batch_size,
        "workers": args.workers,
        "student_layers": args.student_layers,  # None: the whole model
        "pairs": {name: {pair: len(s) for pair, (s, _) in g.items()} for name, g in groups.items()},
        "arms": {
            arm: {k: rounded(v["mean"], 4) for k, v in metrics.items()} for arm, metrics in summary.items()
        },
        "spread": {
            arm: {k: rounded(v["spread"], 3) for k, v in metrics.items()} for arm, metrics in summary.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "targets": TARGETS,
    }
    result["arm_overrides"] = {arm: args.arm_overrides[arm] for arm in arms}
    result.update(headline_differences(summary))
    emit(result)
    return result


def headline_differences(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Out of domain, each arm minus ``hard`` (and ``sweep_soft`` minus ``sweep_hard``), and the two
    headline figures the targets are about: ``soft`` minus ``hard`` in points of bitext accuracy, and
    ``soft_tms`` (soft with TMS) minus ``hard`` in rho of monolingual structure."""

    def minus(arm: str, baseline: str) -> dict[str, float | None]:
        return {
            "bitext": rounded(summary[arm]["ood/acc"]["mean"] - summary[baseline]["ood/acc"]["mean"], 3),
            "structure": rounded(
                summary[arm]["ood/structure"]["mean"] - summary[baseline]["ood/structure"]["mean"], 3
            ),
        }

    out: dict[str, Any] = {}
    if "hard" in summary:
        out["ood_minus_hard"] = {arm: minus(arm, "hard") for arm in summary if arm != "hard"}
        if "soft" in summary:
            out["soft_minus_hard_bitext"] = out["ood_minus_hard"]["soft"]["bitext"]
        if "soft_tms" in summary:
            out["soft_minus_hard_structure"] = out["ood_minus_hard"]["soft_tms"]["structure"]
    if {"sweep_soft", "sweep_hard"} <= set(summary):
        out["sweep_soft_minus_hard"] = minus("sweep_soft", "sweep_hard")
    if {"sweep_soft", "sweep_hard_same_tau"} <= set(summary):
        out["sweep_soft_minus_hard_same_tau"] = minus("sweep_soft", "sweep_hard_same_tau")
    out["targets_met"] = {key: out[key] >= target for key, target in TARGETS.items() if key in out}
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
