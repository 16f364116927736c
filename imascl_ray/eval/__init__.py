"""Evaluation: the paper's metrics (bitext accuracy both ways, weighted f1, ratio margin, xSIM, STS
Spearman) on precomputed embeddings, the paper suite through mteb, the local suite on pair files,
and reports (MLflow logging is :mod:`imascl_ray.tracking`'s). Plain PyTorch/NumPy; no Ray.

Modules: :mod:`~imascl_ray.eval.chunked` (chunked top-k), :mod:`~imascl_ray.eval.bitext`,
:mod:`~imascl_ray.eval.sts`, :mod:`~imascl_ray.eval.local_suite`, :mod:`~imascl_ray.eval.mteb_suite`,
:mod:`~imascl_ray.eval.report`, :mod:`~imascl_ray.eval.runner`
(``evaluate_model``: a model folder and a suite name to results and flat metrics).
"""

from imascl_ray.eval.bitext import (
    MARGIN_K,
    bitext_scores,
    margin_neighbours,
    nearest_neighbours,
    retrieval_accuracy,
    weighted_classification_scores,
    xsim_error,
)
from imascl_ray.eval.chunked import chunked_topk
from imascl_ray.eval.local_suite import evaluate_pair_groups, flatten_local
from imascl_ray.eval.sts import spearman, sts_spearman

__all__ = [
    "MARGIN_K",
    "bitext_scores",
    "chunked_topk",
    "evaluate_pair_groups",
    "flatten_local",
    "margin_neighbours",
    "nearest_neighbours",
    "retrieval_accuracy",
    "spearman",
    "sts_spearman",
    "weighted_classification_scores",
    "xsim_error",
]
