"""Soft contrastive learning for multilingual sentence embeddings: labels and losses on plain tensors.

Notation (arXiv 2405.16155, Sec. 3). A batch holds ``N`` translation pairs ``(s_i, t_i)``. The student
``f`` embeds both sides; the frozen teacher ``g`` embeds them too. With ``cos`` the cosine similarity,

    sim_f(x, y) = cos(f(x), f(y)) / tau          sim_g(x, y) = cos(g(x), g(y)) / tau_teacher

* soft labels ``w(i, j)`` (a row-stochastic ``N x N`` matrix): hard (Eq. 3, the identity), Priority
  (Eq. 4, a row softmax of the anchor language's teacher similarities) or Average (Eq. 5, a row softmax of
  the mean of both languages' teacher similarities);
* ``L_row``  (Eq. 2) ``= -1/N sum_ij w(i,j) log softmax_n sim_f(s_i, t_n) |_{n=j}``: each source sentence
  spreads its probability over the targets as the labels say;
* ``L_col``  (Eq. 6) ``= -1/N sum_ij w(i,j) log softmax_n sim_f(s_n, t_j) |_{n=i}``: the same for each
  target over the sources; ``L_cross = L_row + L_col`` (summed, as in the paper and the authors' code);
* ``L_mono`` (Eq. 7) the same soft labels on ``sim_f(s, s)`` and ``sim_f(t, t)``, column-normalised;
* ``L = lambda * L_cross + L_mono`` (Eq. 8, "TMS");
* the embedding-MSE distillation baseline of Reimers & Gurevych (2020).

One object per loss (:mod:`.contrastive`, :mod:`.mse`), each called on the same gathered-batch inputs
(:mod:`.base`) and built from the config by :func:`build_loss` (:mod:`.factory`); the maths they share
(labels and one soft cross-entropy primitive) is in :mod:`.maths`.
"""

from imascl_ray.losses.base import Loss, LossInputs, LossOutput
from imascl_ray.losses.contrastive import (
    SOFT_LABEL_KINDS,
    ContrastiveLoss,
    HardNegativesLoss,
    InfoNCELoss,
    SoftContrastiveLoss,
)
from imascl_ray.losses.factory import LOSSES, build_loss
from imascl_ray.losses.maths import (
    LABEL_KINDS,
    LabelKind,
    contrastive_sums,
    cosine_matrix,
    label_logits,
    soft_cross_entropy,
    soft_labels,
)
from imascl_ray.losses.mse import EmbeddingMSELoss

__all__ = [
    "LABEL_KINDS",
    "LOSSES",
    "SOFT_LABEL_KINDS",
    "ContrastiveLoss",
    "EmbeddingMSELoss",
    "HardNegativesLoss",
    "InfoNCELoss",
    "LabelKind",
    "Loss",
    "LossInputs",
    "LossOutput",
    "SoftContrastiveLoss",
    "build_loss",
    "contrastive_sums",
    "cosine_matrix",
    "label_logits",
    "soft_cross_entropy",
    "soft_labels",
]
