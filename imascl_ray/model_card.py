"""The model card (``README.md``) of an exported model folder, written from the run's config and results.

A sentence-transformers / Hugging Face style card: YAML front matter (library, pipeline tag, languages,
base model, datasets, license where known, the evaluation as ``model-index`` metrics), what the model is
(student, teacher, loss with its temperatures and lambda, language pairs, steps, global batch, workers),
the run's evaluation table (the local suite or the paper suite, both directions), three lines of
``SentenceTransformer`` that use it, and the citation of the paper. Nothing in it is written by hand:
every fact comes from the :class:`~imascl_ray.config.Config` of the run and from what it measured, so
the card of a run cannot drift from the run. Plain Python (no Ray, no MLflow).

``sentence_transformers.SentenceTransformer`` keeps the card: loading the folder reads ``README.md`` and
saving it again (as MLflow's sentence-transformers flavour does) writes the same text back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from imascl_ray.config import Config

CARD_FILE = "README.md"
PAPER_URL = "https://arxiv.org/abs/2405.16155"
CITATION = """@article{park2024imascl,
  title   = {Improving Multi-lingual Alignment Through Soft Contrastive Learning},
  author  = {Park, Minsu and Choi, Seyeon and Choi, Chanyeol and Kim, Jun-Seong and Sohn, Jy-yong},
  journal = {arXiv preprint arXiv:2405.16155},
  year    = {2024},
  url     = {https://arxiv.org/abs/2405.16155}
}"""

OFFLINE_MODELS = {"offline:multilingual-e5-small": "intfloat/multilingual-e5-small"}
"""Models this package rebuilds offline -> the hub model they reproduce (the card's ``base_model``)."""

KNOWN_LICENSES = {
    "intfloat/multilingual-e5-small": "mit",
    "intfloat/multilingual-e5-base": "mit",
    "intfloat/multilingual-e5-large": "mit",
}
"""Licenses of base models this project's recipes use (a base model folder's own card wins)."""

LOSS_TITLES = {
    "soft": "soft contrastive loss (the paper's)",
    "infonce": "InfoNCE with hard (one-hot) labels",
    "mse": "embedding MSE distillation",
    "hard_negatives": "contrastive loss with mined hard negatives (mUSE style)",
}


def loss_names(loss: Any) -> tuple[str, str | None]:
    """``(loss.name, loss.labels)``, the labels only for the soft-label loss."""
    return str(loss.name), (str(loss.labels) if loss.name == "soft" else None)


def loss_summary(loss: Any) -> str:
    """One line: the loss, its labels, temperatures, TMS and lambda, as the run used them."""
    name, labels = loss_names(loss)
    parts = [f"`{name}`: {LOSS_TITLES.get(name, name)}"]
    if labels:
        parts.append(f"{labels} soft labels")
    if name != "mse":
        teacher_tau = loss.teacher_tau if loss.teacher_tau is not None else loss.tau
        parts.append(f"student temperature tau = {loss.tau:g}")
        if name in ("soft", "hard_negatives"):
            parts.append(f"teacher temperature = {teacher_tau:g}")
        if loss.tms:
            parts.append(f"TMS (monolingual term), lambda = {loss.lam:g}")
        if loss.margin:
            parts.append(f"margin = {loss.margin:g}")
    if name == "hard_negatives":
        parts.append(f"{loss.hard_negatives} hard negative(s) per pair")
    return "; ".join(parts)


def base_model_id(name: str) -> str:
    """The hub id the card names as ``base_model`` (an offline rebuild names the model it reproduces)."""
    return OFFLINE_MODELS.get(name, name)


def _front_matter_of(folder: Path) -> dict[str, Any]:
    """The YAML front matter of a model folder's own ``README.md`` (empty when it has none)."""
    card = folder / CARD_FILE
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    try:
        found = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return found if isinstance(found, dict) else {}


def license_of(name: str, folder: str | Path | None = None) -> str | None:
    """The base model's license: its folder's card if it states one, else :data:`KNOWN_LICENSES`."""
    if folder is not None and Path(folder).is_dir():
        stated = _front_matter_of(Path(folder)).get("license")
        if stated:
            return str(stated)
    return KNOWN_LICENSES.get(base_model_id(name))


def corpus_name(corpus: str) -> str:
    """How the card names the training corpus: the hub id, the gettext catalogues, or the file's name."""
    if corpus.startswith("hub:"):
        return corpus.removeprefix("hub:")
    if corpus == "gettext":
        return "gettext localisation catalogues of this machine"
    return Path(corpus).name


def corpus_id(corpus: str) -> str:
    """A short id of the training corpus (``model-index`` dataset type): hub id, ``gettext``, file name."""
    return corpus.removeprefix("hub:") if corpus.startswith("hub:") else Path(corpus).name


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def local_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: per language pair, accuracy both ways and their mean, margin accuracy, xSIM, n."""
    lines = [
        "| pair | accuracy (mean) | src -> tgt | tgt -> src | margin accuracy | xSIM error | pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, entry in results.items():
        lines.append(
            f"| {pair} | {_pct(entry['accuracy'])} | {_pct(entry['accuracy_src_to_tgt'])} | "
            f"{_pct(entry['accuracy_tgt_to_src'])} | {_pct(entry['margin_accuracy'])} | "
            f"{_pct(entry['xsim_error'])} | {int(entry['n'])} |"
        )
    return "\n".join(lines)


def model_index(
    name: str, suite: str, evaluation: Mapping[str, Any] | None, dataset: str, dataset_id: str
) -> list[dict]:
    """The ``model-index`` front matter (Hugging Face's metrics format) of the run's evaluation."""
    if not evaluation:
        return []
    results = []
    if suite == "local":
        for pair, entry in evaluation.items():
            results.append(
                {
                    "task": {"type": "bitext-mining", "name": "Bitext retrieval"},
                    "dataset": {
                        "name": f"{dataset} (held-out {pair} pairs)",
                        "type": dataset_id,
                        "config": pair,
                    },
                    "metrics": [
                        {
                            "type": "accuracy",
                            "name": "accuracy (mean of both directions)",
                            "value": _r(entry["accuracy"]),
                        },
                        {
                            "type": "accuracy",
                            "name": "accuracy src -> tgt",
                            "value": _r(entry["accuracy_src_to_tgt"]),
                        },
                        {
                            "type": "accuracy",
                            "name": "accuracy tgt -> src",
                            "value": _r(entry["accuracy_tgt_to_src"]),
                        },
                        {"type": "xsim", "name": "xSIM error", "value": _r(entry["xsim_error"])},
                    ],
                }
            )
    else:
        for task, pairs in evaluation.get("tasks", {}).items():
            for pair, entry in pairs.items():
                metric = (
                    {"type": "spearman", "name": "Spearman (cosine)", "value": _r(entry.get("spearman"))}
                    if "spearman" in entry
                    else {
                        "type": "accuracy",
                        "name": "accuracy (mean of both directions)",
                        "value": _r(entry.get("accuracy")),
                    }
                )
                if metric["value"] is None:
                    continue
                results.append(
                    {
                        "task": {"type": "STS" if "spearman" in entry else "bitext-mining"},
                        "dataset": {"name": f"MTEB {task} ({pair})", "type": f"mteb/{task}", "config": pair},
                        "metrics": [metric],
                    }
                )
    return [{"name": name, "results": results}] if results else []


def _r(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def model_card(
    config: Config,
    *,
    name: str,
    evaluation: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    best_score: float | None = None,
    prefix: str | None = None,
    base_model_folder: str | Path | None = None,
) -> str:
    """The card's text. ``evaluation``: the run's ``eval.suite`` results (local: ``{pair: {...}}``;
    paper: the mteb suite's result); ``summary``: what rank 0's loop returned (steps, seconds);
    ``prefix``: the prompt the folder records as its default (added by ``encode()`` on its own)."""
    suite = config.eval.suite
    base = base_model_id(config.model.name)
    teacher = base_model_id(config.teacher.name) if config.teacher.name else base
    dataset = corpus_name(config.data.corpus)
    front: dict[str, Any] = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "language": list(config.data.languages),
        "base_model": base,
        "tags": [
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "imascl",
            "soft-contrastive",
        ],
    }
    if config.data.corpus.startswith("hub:"):
        front["datasets"] = [dataset]
    license_id = license_of(config.model.name, base_model_folder)
    if license_id:
        front["license"] = license_id
    index = model_index(name, suite, evaluation, dataset, corpus_id(config.data.corpus))
    if index:
        front["model-index"] = index
    steps = (summary or {}).get("global_step")
    seconds = (summary or {}).get("seconds")
    facts = [
        f"- **Student** (starting point): `{base}`"
        + (f" (rebuilt offline as `{config.model.name}`)" if base != config.model.name else ""),
        f"- **Teacher** (frozen): `{teacher}`"
        + (
            ""
            if loss_names(config.loss)[0] == "infonce"
            else ", whose similarities (or embeddings) it learns"
        ),
        f"- **Loss**: {loss_summary(config.loss)}",
        f"- **Language pairs**: `{config.data.pair_set}` over {', '.join(config.data.languages)}",
        f"- **Training data**: {dataset}, at most {config.data.max_pairs_per_language_pair:,} pairs per "
        f"language pair, {config.data.validation_pairs:,} (validation) and {config.data.test_pairs:,} (test) "
        "held out per language pair",
        f"- **Steps**: {_steps(steps, config)}"
        f" with a global batch of {config.schedule.global_batch_size} pairs on "
        f"{config.scaling.num_workers} Ray Train worker(s) ({'GPU' if config.scaling.use_gpu else 'CPU'})",
        f"- **Optimiser**: AdamW, learning rate {config.optim.lr:g}, warm-up {config.optim.warmup_ratio:g}",
    ]
    if best_score is not None:
        facts.append(
            f"- **Best validation accuracy** (`val/mean/acc`, mean of both directions): {best_score:.4f}"
        )
    if seconds is not None:
        facts.append(f"- **Training time**: {float(seconds) / 60:.1f} min")
    sections = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        f"# {name}",
        f"A multilingual sentence encoder trained with imascl-ray: `{base}` fine-tuned on translation pairs "
        "so that its cross-lingual similarities follow a frozen teacher's "
        f"([Park et al., 2024]({PAPER_URL})).",
        "## Training\n\n" + "\n".join(facts),
        "## Evaluation\n\n" + _evaluation_section(suite, evaluation),
        "## Usage\n\n" + _usage(prefix),
        "## Citation\n\n```bibtex\n" + CITATION + "\n```",
    ]
    return "\n\n".join(sections) + "\n"


def _steps(steps: Any, config: Config) -> str:
    """The steps the run took (rank 0's count), else what the config asked for."""
    if steps is not None:
        return str(int(steps))
    return (
        str(config.schedule.max_steps) if config.schedule.max_steps else f"{config.schedule.epochs} epoch(s)"
    )


def _evaluation_section(suite: str, evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return "This run was not evaluated (`eval.suite: none`, or no held-out pairs)."
    if suite == "local":
        return (
            "Bitext retrieval on held-out pairs of the training corpus, which training never saw: for each "
            "sentence, is its translation the nearest of all candidates (cosine), in both directions; "
            "margin accuracy uses the ratio margin (k = 4) and xSIM is its error rate.\n\n"
            + local_table(evaluation)
        )
    from imascl_ray.eval.report import paper_markdown

    return "The paper's benchmarks through mteb.\n\n" + paper_markdown(evaluation)


def _usage(prefix: str | None) -> str:
    code = (
        "```python\nfrom sentence_transformers import SentenceTransformer\n"
        'model = SentenceTransformer("path/to/this/folder")\n'
        'embeddings = model.encode(["Open the file", "Ouvrir le fichier"], normalize_embeddings=True)\n```'
    )
    if prefix:
        return (
            code
            + f"\n\nThe folder records the prefix `{prefix}` as its default prompt, so `encode()` adds it to "
            "every input: do not prepend it yourself (it would then be there twice)."
        )
    return code + "\n\nThe model takes its inputs as they are (no prefix)."


def write_model_card(folder: str | Path, config: Config, **facts: Any) -> Path:
    """Write :func:`model_card` as ``folder/README.md`` (the prompt is read from the folder itself)."""
    from imascl_ray.encoder import read_sentence_transformers_folder

    folder = Path(folder)
    recorded = read_sentence_transformers_folder(folder)
    facts.setdefault("prefix", recorded.get("prefix"))
    facts.setdefault("name", folder.parent.name if folder.name in ("model", "best-model") else folder.name)
    path = folder / CARD_FILE
    path.write_text(model_card(config, **facts), encoding="utf-8")
    return path
