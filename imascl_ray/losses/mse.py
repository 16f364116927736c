"""The embedding-MSE distillation baseline of Reimers & Gurevych (2020)."""

from __future__ import annotations

import torch.nn.functional as F

from imascl_ray.losses.base import Loss, LossInputs, LossOutput
from imascl_ray.losses.maths import full_precision


class EmbeddingMSELoss(Loss):
    """Both student sides regress onto the teacher's embedding of the pair's anchor side.

    ``mean((f(s_i) - g(a_i))^2) + mean((f(t_i) - g(a_i))^2)`` over this rank's rows ``i`` of the global
    batch, ``a_i`` the anchor-language sentence (the higher-priority language, English for en-xx pairs:
    the paper's setting of "Making Monolingual Sentence Embeddings Multilingual"), so the student and
    teacher must share a dimension. It needs no negatives: every rank averages its own rows, and the mean
    over ranks of equal slices is the global mean (DDP's gradient averaging does the rest). The authors'
    "MMSE" baseline, an MSE between similarity matrices, is a different loss.
    """

    name = "mse"
    needs_teacher = True

    def __call__(self, inputs: LossInputs) -> LossOutput:
        self.check(inputs)
        target = inputs.teacher_anchor[inputs.rows].detach()
        if inputs.src.shape != target.shape:
            raise ValueError(
                "mse distillation needs student and teacher embeddings of one shape; got student "
                f"{list(inputs.src.shape)} and teacher {list(target.shape)} for this rank's rows"
            )
        src, tgt = _mse(inputs.src, target), _mse(inputs.tgt, target)
        return LossOutput(src + tgt, {"mse_src": src.detach(), "mse_tgt": tgt.detach()})

    def __repr__(self) -> str:
        return "EmbeddingMSELoss()"


@full_precision
def _mse(student, teacher):
    return F.mse_loss(student, teacher)
