"""The paper's evaluation through mteb 2.26: Tatoeba, BUCC.v2, FLORES (xSIM), STSBenchmark, STS17, STS22.

How it works:

1. The mteb task objects are built with :func:`paper_tasks` (``mteb.get_task(name, hf_subsets=...,
   eval_splits=...)``) and their data is loaded *before* ``mteb.evaluate`` (from the hub, or injected
   locally as ``task.dataset`` with ``task.data_loaded = True``), so that it is still there afterwards.
2. The model goes to ``mteb.evaluate`` through :class:`MtebEncoder`, which implements mteb's
   ``EncoderProtocol`` with a real ``ModelMeta`` (the model's name and its weights' content hash as
   revision) and runs with ``cache=None``: no shared result cache, so two models never collide.
   mteb's own numbers (one-direction accuracy / weighted f1, ``cosine_spearman``) are kept.
3. :class:`MtebEncoder` remembers every embedding it produced, by text. The paper's numbers are then
   computed by the project from those same embeddings and the task's data: bitext accuracy in both
   directions and their mean (Tatoeba, BUCC), xSIM error for FLORES (mteb has none), Spearman for STS.

The result is a JSON-ready dict (see :func:`run_paper_suite`); :func:`flatten_paper` turns it into
MLflow metrics such as ``tatoeba/fra-eng/acc``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from imascl_ray.errors import InputError
from imascl_ray.eval.bitext import MARGIN_K, bitext_scores
from imascl_ray.eval.local_suite import SHORT_NAMES, TextEncoder
from imascl_ray.eval.sts import spearman

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteTask:
    """One mteb task of the suite: its mteb name, the namespace of its metrics, subsets and split."""

    mteb_name: str
    key: str
    kind: str  # "bitext", "parallel" (FLORES: one column per language) or "sts"
    subsets: tuple[str, ...]
    split: str


PAPER_LANGUAGES = ("ko", "fr", "ja", "ru")
"""The paper's non-English languages (Tables 2 and 4 have one row per en-xx pair, in this order)."""

FLORES_CODES = {"en": "eng_Latn", "fr": "fra_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "ru": "rus_Cyrl"}

PAPER_SUITE: tuple[SuiteTask, ...] = (
    SuiteTask("Tatoeba", "tatoeba", "bitext", ("fra-eng", "jpn-eng", "kor-eng", "rus-eng"), "test"),
    SuiteTask("BUCC.v2", "bucc", "bitext", ("fr-en", "ru-en"), "test"),
    SuiteTask(
        "FloresBitextMining",
        "flores",
        "parallel",
        tuple(f"{FLORES_CODES[xx]}-{FLORES_CODES['en']}" for xx in ("fr", "ja", "ko", "ru"))
        + tuple(f"{FLORES_CODES['en']}-{FLORES_CODES[xx]}" for xx in ("fr", "ja", "ko", "ru")),
        "devtest",
    ),
    SuiteTask("STSBenchmark.v2", "stsb", "sts", ("default",), "test"),
    SuiteTask("STS17", "sts17", "sts", ("en-en", "ko-ko", "fr-en"), "test"),
    SuiteTask("STS22.v2", "sts22", "sts", ("en", "fr", "ru"), "test"),
)
"""The paper's benchmarks, restricted to its languages (en, fr, ja, ko, ru) as mteb 2.26 names them."""

# Where each paper language's numbers come from: (task key, pair name in our results).
TATOEBA_PAIR = {"fr": "fra-eng", "ja": "jpn-eng", "ko": "kor-eng", "ru": "rus-eng"}
BUCC_PAIR = {"fr": "fr-en", "ru": "ru-en"}
FLORES_PAIR = {"fr": "fra-eng", "ja": "jpn-eng", "ko": "kor-eng", "ru": "rus-eng"}
STS_SOURCES = {
    "en": (("stsb", "en"), ("sts17", "en-en"), ("sts22", "en")),
    "ko": (("sts17", "ko-ko"),),
    "fr": (("sts22", "fr"),),
    "ru": (("sts22", "ru"),),
    "ja": (),
    "en-fr": (("sts17", "fr-en"),),
}
"""STS (xx) of the paper: the mean Spearman over the sets of that language (ja has none in mteb)."""

BITEXT_SHORT_NAMES = {
    **SHORT_NAMES,
    "xsim_error_tgt_to_src": "xsim_tgt_to_src",
    "margin_accuracy_src_to_tgt": "margin_acc_src_to_tgt",
    "margin_accuracy_tgt_to_src": "margin_acc_tgt_to_src",
    "mteb_f1": "f1",
    "mteb_accuracy": "mteb_acc",
}


def _script_free(subset: str) -> str:
    """``fra_Latn-eng_Latn`` -> ``fra-eng``; other names unchanged."""
    return "-".join(part.split("_")[0] for part in subset.split("-"))


def _result_name(task: SuiteTask, subset: str) -> str:
    """The name a subset gets in our results: STSBenchmark's ``default`` is ``en``."""
    if task.kind == "sts" and subset == "default":
        return "en"
    return _script_free(subset)


def paper_tasks(suite: Sequence[SuiteTask] = PAPER_SUITE) -> list[Any]:
    """The real mteb task objects of the suite, restricted to its subsets and split (data not loaded)."""
    import mteb

    tasks = []
    for spec in suite:
        subsets = None if spec.subsets == ("default",) else list(spec.subsets)
        tasks.append(mteb.get_task(spec.mteb_name, hf_subsets=subsets, eval_splits=[spec.split]))
    return tasks


def model_meta(name: str, revision: str, embedding_dim: int | None = None) -> Any:
    """An mteb ``ModelMeta`` naming the model (``org/name`` form) and its revision, with cosine scoring."""
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    if "/" not in name:
        name = f"local/{name}"
    return ModelMeta.create_empty(
        overwrites={
            "name": name,
            "revision": revision,
            "embed_dim": embedding_dim,
            "similarity_fn_name": ScoringFunction.COSINE,
            "framework": ["PyTorch"],
        }
    )


class MtebEncoder:
    """mteb's ``EncoderProtocol`` around any ``encode(texts) -> Tensor`` model, remembering embeddings.

    Each distinct text is encoded once for the whole suite (our encoders use no task-specific
    prompts, so the embedding of a text does not depend on the task); :meth:`embed` gives the stored
    embeddings back for the project's own metrics.
    """

    def __init__(self, encoder: TextEncoder, *, name: str, revision: str, embedding_dim: int | None = None):
        self.encoder = encoder
        self.mteb_model_meta = model_meta(name, revision, embedding_dim)
        self._rows: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[n, d]`` float32 embeddings of ``texts``, encoding only those not seen before."""
        missing = [text for text in dict.fromkeys(texts) if text not in self._rows]
        if missing:
            vectors = torch.as_tensor(self.encoder.encode(missing)).detach().float().cpu().numpy()
            if vectors.shape[0] != len(missing):
                raise ValueError(f"encoder returned {vectors.shape[0]} embeddings for {len(missing)} texts")
            self._rows.update(zip(missing, vectors, strict=True))
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        return np.stack([self._rows[text] for text in texts])

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any = None,
        hf_split: str = "",
        hf_subset: str = "",
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """mteb's entry point: ``inputs`` is a DataLoader of batches with a ``text`` list."""
        texts = [text for batch in inputs for text in batch["text"]]
        return self.embed(texts)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine similarity matrix ``[n1, n2]``."""
        a = torch.nn.functional.normalize(
            torch.as_tensor(np.asarray(embeddings1), dtype=torch.float32), dim=-1
        )
        b = torch.nn.functional.normalize(
            torch.as_tensor(np.asarray(embeddings2), dtype=torch.float32), dim=-1
        )
        return (a.reshape(-1, a.shape[-1]) @ b.reshape(-1, b.shape[-1]).T).numpy()

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """Cosine similarity of row i with row i, ``[n]``."""
        a = torch.nn.functional.normalize(
            torch.as_tensor(np.asarray(embeddings1), dtype=torch.float32), dim=-1
        )
        b = torch.nn.functional.normalize(
            torch.as_tensor(np.asarray(embeddings2), dtype=torch.float32), dim=-1
        )
        return (a * b).sum(dim=-1).numpy()


def _split_data(task: Any, subset: str, split: str) -> Any:
    """The ``datasets.Dataset`` of one subset and split, as mteb itself finds it."""
    dataset = task.dataset
    if subset == "default" and subset not in dataset:
        return dataset[split]
    return dataset[subset][split]


def _load(task: Any) -> bool:
    """Load the task's data unless it is already there; ``True`` if this call loaded it."""
    if task.data_loaded:
        return False
    try:
        task.load_data()
    except Exception as error:  # the hub, a missing dataset, no network: say which task and where
        raise InputError(
            f"mteb task {task.metadata.name}: cannot load dataset "
            f"{task.metadata.dataset.get('path')} ({type(error).__name__}: {error})"
        ) from error
    return True


def _mteb_scores(model_result: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """``{task name: {hf_subset: scores}}`` from mteb's ``ModelResult`` (one split per task here)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for task_result in model_result.task_results:
        per_subset = found.setdefault(task_result.task_name, {})
        for scores in task_result.scores.values():
            for entry in scores:
                per_subset[entry["hf_subset"]] = {
                    key: value for key, value in entry.items() if isinstance(value, int | float | str)
                }
    return found


def _bitext_entry(
    adapter: MtebEncoder,
    sources: Sequence[str],
    targets: Sequence[str],
    k: int,
    device: str | torch.device | None,
) -> dict[str, float]:
    return bitext_scores(adapter.embed(sources), adapter.embed(targets), k=k, device=device)


def _evaluate_task(
    spec: SuiteTask,
    task: Any,
    adapter: MtebEncoder,
    mteb_scores: Mapping[str, Any],
    k: int,
    device: str | torch.device | None,
) -> dict[str, dict[str, float]]:
    """The project's numbers for one task, with mteb's own main numbers beside them."""
    out: dict[str, dict[str, float]] = {}
    if spec.kind == "bitext":
        for subset in task.hf_subsets:
            data = _split_data(task, subset, spec.split)
            entry = _bitext_entry(adapter, data["sentence1"], data["sentence2"], k, device)
            if subset in mteb_scores:
                entry["mteb_f1"] = float(mteb_scores[subset]["f1"])
                entry["mteb_accuracy"] = float(mteb_scores[subset]["accuracy"])
            out[_result_name(spec, subset)] = entry
    elif spec.kind == "parallel":
        data = task.dataset[spec.split]
        for subset in task.hf_subsets:
            source_lang, target_lang = subset.split("-")
            if target_lang != FLORES_CODES["en"]:
                continue  # eng -> xx is the reverse direction of the xx -> eng entry
            entry = _bitext_entry(adapter, data[source_lang], data[target_lang], k, device)
            if subset in mteb_scores:
                entry["mteb_f1"] = float(mteb_scores[subset]["f1"])
                entry["mteb_accuracy"] = float(mteb_scores[subset]["accuracy"])
            out[_result_name(spec, subset)] = entry
    else:
        columns = getattr(task, "column_names", ("sentence1", "sentence2"))
        for subset in task.hf_subsets:
            data = _split_data(task, subset, spec.split)
            cos = adapter.similarity_pairwise(
                adapter.embed(data[columns[0]]), adapter.embed(data[columns[1]])
            )
            entry = {"spearman": spearman(cos, np.asarray(data["score"], dtype=np.float64)), "n": len(cos)}
            if subset in mteb_scores:
                entry["mteb_cosine_spearman"] = float(mteb_scores[subset]["cosine_spearman"])
            out[_result_name(spec, subset)] = entry
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None


def paper_summary(tasks: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """The paper's headline numbers from per-task results (``None`` where the data does not exist).

    ``languages[xx]``: Tatoeba and BUCC accuracy (mean of both directions), FLORES xSIM error
    (xx -> eng), STS (en) and STS (xx) Spearman, as in Tables 2 and 4; ``sts[lang]``: STS per
    language as in Table 6; ``mean``: averages over the languages, as in Tables 3 and 5.
    """
    by_key = {spec.key: tasks.get(spec.mteb_name, {}) for spec in PAPER_SUITE}

    def pick(key: str, pair: str | None, field: str) -> float | None:
        entry = by_key.get(key, {}).get(pair) if pair else None
        return None if entry is None else float(entry[field])

    sts = {
        lang: _mean(pick(key, pair, "spearman") for key, pair in sources)
        for lang, sources in STS_SOURCES.items()
    }
    languages = {
        xx: {
            "tatoeba": pick("tatoeba", TATOEBA_PAIR.get(xx), "accuracy"),
            "bucc": pick("bucc", BUCC_PAIR.get(xx), "accuracy"),
            "flores_xsim": pick("flores", FLORES_PAIR.get(xx), "xsim_error"),
            "sts_en": sts["en"],
            "sts_xx": sts.get(xx),
        }
        for xx in PAPER_LANGUAGES
    }
    mean = {
        field: _mean(entry[field] for entry in languages.values())
        for field in ("tatoeba", "bucc", "flores_xsim")
    }
    return {"languages": languages, "sts": sts, "mean": mean}


def run_paper_suite(
    encoder: TextEncoder,
    *,
    name: str,
    revision: str,
    embedding_dim: int | None = None,
    tasks: Sequence[Any] | None = None,
    suite: Sequence[SuiteTask] = PAPER_SUITE,
    k: int = MARGIN_K,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the suite through ``mteb.evaluate`` and compute the paper's numbers from the same embeddings.

    Args:
        encoder: the model (``encode(texts) -> Tensor``), applying its own prefix.
        name, revision: what mteb records for the model (e.g. the folder name and its weights' hash).
        tasks: mteb task objects matching ``suite`` (default :func:`paper_tasks`); data already
            injected into them is used as is, otherwise it is loaded from the hub.
        k: neighbours of the ratio margin (xSIM).

    Returns:
        ``{"suite": "paper", "model": {"name", "revision"}, "tasks": {mteb name: {pair: {...}}},
        "summary": paper_summary(...), "mteb": {mteb name: {hf_subset: mteb's scores}}}``.
        Bitext entries hold :func:`~imascl_ray.eval.bitext.bitext_scores` plus mteb's ``mteb_f1`` and
        ``mteb_accuracy`` (sentence1 -> sentence2); STS entries ``spearman``, ``n`` and mteb's
        ``mteb_cosine_spearman``.
    """
    import mteb

    tasks = list(paper_tasks(suite) if tasks is None else tasks)
    specs = {spec.mteb_name: spec for spec in suite}
    for task in tasks:
        if task.metadata.name not in specs:
            raise ValueError(f"task {task.metadata.name} is not part of the suite")
    adapter = MtebEncoder(encoder, name=name, revision=revision, embedding_dim=embedding_dim)
    loaded_here = [task for task in tasks if _load(task)]
    try:
        logger.info(
            "mteb: evaluating %s (revision %s) on %s",
            name,
            revision,
            ", ".join(task.metadata.name for task in tasks),
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")
            model_result = mteb.evaluate(
                adapter,
                tasks,
                cache=None,
                show_progress_bar=show_progress,
                encode_kwargs={"batch_size": batch_size},
            )
        mteb_scores = _mteb_scores(model_result)
        results = {}
        for task in tasks:
            spec = specs[task.metadata.name]
            results[spec.mteb_name] = _evaluate_task(
                spec, task, adapter, mteb_scores.get(spec.mteb_name, {}), k, device
            )
    finally:
        for task in loaded_here:
            task.unload_data()
    return {
        "suite": "paper",
        "model": {"name": adapter.mteb_model_meta.name, "revision": revision},
        "tasks": results,
        "summary": paper_summary(results),
        "mteb": mteb_scores,
    }


def flatten_paper(result: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics of a paper-suite result: ``tatoeba/fra-eng/acc``, ``flores/fra-eng/xsim``,
    ``sts17/ko-ko/spearman``, ... and the headline numbers as ``paper/tatoeba/acc``,
    ``paper/bucc/acc``, ``paper/flores/xsim``, ``paper/sts_en/spearman``, ``paper/sts_ko/spearman``."""
    key_of = {spec.mteb_name: spec.key for spec in PAPER_SUITE}
    flat: dict[str, float] = {}
    for task_name, pairs in result["tasks"].items():
        namespace = key_of.get(task_name, task_name.lower())
        for pair, entry in pairs.items():
            for field, value in entry.items():
                if field == "n" or value is None:
                    continue
                short = BITEXT_SHORT_NAMES.get(field, field)
                flat[f"{namespace}/{pair}/{short}"] = float(value)
    mean = result["summary"]["mean"]
    for field, metric in (
        ("tatoeba", "paper/tatoeba/acc"),
        ("bucc", "paper/bucc/acc"),
        ("flores_xsim", "paper/flores/xsim"),
    ):
        if mean.get(field) is not None:
            flat[metric] = float(mean[field])
    for lang, value in result["summary"]["sts"].items():
        if value is not None:
            flat[f"paper/sts_{lang}/spearman"] = float(value)
    return flat
