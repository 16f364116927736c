"""Parallel corpora: loading (local files, the Hugging Face hub, gettext catalogues), language pairs and
priority, sampling and splits, the contamination filter, and the batch plan the trainer consumes.

Plain Python/NumPy: nothing here imports Ray or torch.
"""

from imascl_ray.data.batch_plan import BatchPlan, GlobalBatch
from imascl_ray.data.corpus import Corpus, Pair
from imascl_ray.data.corpus_files import read_corpus, write_corpus
from imascl_ray.data.hub import load_hub_corpus
from imascl_ray.data.languages import anchor_side, resolve_pair_set, resolve_priority
from imascl_ray.data.split import (
    ContaminationReport,
    RunSplit,
    Split,
    cap_per_pair,
    contamination_filter,
    normalise_text,
    select_pairs,
    split_for_run,
    train_validation_split,
)

__all__ = [
    "BatchPlan",
    "ContaminationReport",
    "Corpus",
    "GlobalBatch",
    "Pair",
    "RunSplit",
    "Split",
    "anchor_side",
    "cap_per_pair",
    "contamination_filter",
    "load_hub_corpus",
    "normalise_text",
    "read_corpus",
    "resolve_pair_set",
    "resolve_priority",
    "select_pairs",
    "split_for_run",
    "train_validation_split",
    "write_corpus",
]
