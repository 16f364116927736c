"""The contrastive losses: the paper's soft-contrastive loss, hard InfoNCE, and InfoNCE with hard negatives.

All three are ``L_cross = L_row + L_col`` (Eq. 2, 6), optionally ``lam * L_cross + L_mono`` (Eq. 8, TMS),
over the gathered batch; they differ only in the labels ``w`` and in the keys of the row softmax:

* :class:`SoftContrastiveLoss` (``loss.name=soft``): Priority (Eq. 4) or Average (Eq. 5) labels from the
  teacher's similarities;
* :class:`InfoNCELoss` (``infonce``): the identity (Eq. 3), LaBSE / mE5's symmetric InfoNCE;
* :class:`HardNegativesLoss` (``hard_negatives``): the identity, with mined hard negatives joining every
  row's softmax with label 0 (mUSE's translation ranking).

Each computes in one of two forms, same value and gradients (:mod:`imascl_ray.distributed`): the *full*
form builds the whole ``N x N`` batch on every rank; the *local* form (``local=True``) only this rank's
rows and columns, ``B x N`` logits, as open_clip's ``local_loss``, and returns ``W`` times its share so
that the rank average is the global loss. A local form's column labels need every row's softmax
normaliser: the ranks exchange those ``N`` numbers (``inputs.gather``) instead of building ``N x N``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from imascl_ray.losses.base import Loss, LossInputs, LossOutput
from imascl_ray.losses.maths import contrastive_sums, label_logits, sum_of_products

SoftLabelKind = Literal["priority", "average"]
SOFT_LABEL_KINDS: tuple[str, ...] = ("priority", "average")


class LabelBlocks(NamedTuple):
    """The labels of a block of rows ``R``: ``w[R, :]``, ``w[:, R].T`` (both ``[B, N]``) and, for soft
    labels, the sums over ``R`` of each row's entropy and diagonal mass (how far from one-hot they are)."""

    rows: Tensor
    columns: Tensor
    statistics: dict[str, Tensor]


class ContrastiveLoss(Loss):
    """``L_cross`` (or ``lam * L_cross + L_mono``) over the gathered batch; subclasses give the labels.

    Args:
        tau: the student temperature, ``sim_f = cos / tau``.
        lam: None for ``L_cross`` alone; else the weight of ``L_cross`` under TMS (the paper: 0.1).
        margin: LaBSE's additive margin on each translation pair's cosine; 0 is the paper.
        local: compute only this rank's rows and columns (``B x N`` logits instead of ``N x N``).
    """

    def __init__(self, *, tau: float, lam: float | None = None, margin: float = 0.0, local: bool = False):
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if lam is not None and lam < 0:
            raise ValueError(f"lam must not be negative, got {lam}")
        self.tau, self.lam, self.margin, self.local = tau, lam, margin, local

    def label_blocks(self, inputs: LossInputs, rows: slice) -> LabelBlocks:
        """The labels of the batch's rows ``rows`` (all of them in the full form)."""
        raise NotImplementedError

    def __call__(self, inputs: LossInputs) -> LossOutput:
        self.check(inputs)
        n = inputs.batch_size
        if self.local:
            rows, src, tgt, scale = inputs.rows, inputs.src, inputs.tgt, inputs.world_size
        else:
            rows, src, tgt, scale = slice(0, n), inputs.src_all, inputs.tgt_all, 1
        labels = self.label_blocks(inputs, rows)
        cross, mono = contrastive_sums(
            src,
            tgt,
            inputs.src_all,
            inputs.tgt_all,
            labels.rows,
            labels.columns,
            offset=rows.start,
            tau=self.tau,
            margin=self.margin,
            negatives_all=inputs.negatives_all,
            monolingual=self.lam is not None,
        )
        cross = cross * (scale / n)
        terms = {"cross": cross.detach()}
        if mono is None:
            value = cross
        else:
            mono = mono * (scale / n)
            value = self.lam * cross + mono
            terms["mono"] = mono.detach()
        statistics = {name: total * (scale / n) for name, total in labels.statistics.items()}
        return LossOutput(value, terms, statistics)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tau={self.tau}, lam={self.lam}, margin={self.margin}, local={self.local})"
        )


class SoftContrastiveLoss(ContrastiveLoss):
    """The paper's loss: soft labels from the frozen teacher's similarities (Eq. 4 or 5), TMS optional.

    Args:
        labels: ``priority`` (the anchor language's teacher similarities) or ``average`` (both sides').
        teacher_tau: the labels' temperature (None: ``tau``, as in the paper).
        hard_mix: ``a`` in ``w = a * I + (1 - a) * soft`` (past the paper: 0 is its soft labels, 1 hard
            InfoNCE's identity targets; in between, a floor of ``a`` on every translation's label).
        tau, lam, margin, local: as :class:`ContrastiveLoss`.
    """

    name = "soft"
    needs_teacher = True

    def __init__(
        self,
        labels: SoftLabelKind = "priority",
        *,
        tau: float,
        teacher_tau: float | None = None,
        hard_mix: float = 0.0,
        lam: float | None = None,
        margin: float = 0.0,
        local: bool = False,
    ) -> None:
        super().__init__(tau=tau, lam=lam, margin=margin, local=local)
        if labels not in SOFT_LABEL_KINDS:
            raise ValueError(
                f"unknown soft-label kind {labels!r}; expected one of {', '.join(SOFT_LABEL_KINDS)}"
            )
        if not 0.0 <= hard_mix <= 1.0:
            raise ValueError(f"hard_mix must be in [0, 1], got {hard_mix}")
        self.labels = labels
        self.teacher_tau = tau if teacher_tau is None else teacher_tau
        self.hard_mix = hard_mix

    def check(self, inputs: LossInputs) -> None:
        super().check(inputs)
        if self.labels == "average" and inputs.teacher_other is None:
            raise ValueError("average labels need the teacher embeddings of both languages")

    def label_blocks(self, inputs: LossInputs, rows: slice) -> LabelBlocks:
        """Rows ``w[R, :] = softmax(logits[R])``; columns from the row normalisers of the whole batch.

        Column ``j`` of ``w`` is ``exp(logits[:, j] - lse)`` with ``lse`` every row's log-sum-exp, and the
        label logits are symmetric, so ``w[:, R].T = exp(logits[R] - lse[None, :])``: the block's own
        logits and ``N`` numbers, never the ``N x N`` matrix. The full form's columns are its rows' ``.T``.
        All in float32: :func:`label_logits` leaves autocast, and the rest is element-wise on its output.
        """
        anchor = inputs.teacher_anchor.detach()
        other = inputs.teacher_other.detach() if self.labels == "average" else None
        logits = label_logits(
            anchor[rows],
            anchor,
            other[rows] if other is not None else None,
            other,
            kind=self.labels,
            tau=self.teacher_tau,
        )
        logsumexp = torch.logsumexp(logits, dim=1)
        row_labels = torch.exp(logits - logsumexp[:, None])
        own = torch.arange(row_labels.shape[0], device=row_labels.device)
        if self.hard_mix:
            row_labels = self._mixed(row_labels, rows)
            statistics = {"entropy": _entropy_sum(row_labels)}
        else:
            # entropy_i = lse_i - sum_j w_ij logits_ij (as log w_ij = logits_ij - lse_i), no third block
            statistics = {"entropy": (logsumexp.sum() - sum_of_products(row_labels, logits)).detach()}
        statistics["diagonal"] = row_labels[own, own + rows.start].sum().detach()
        if row_labels.shape[0] == inputs.batch_size:
            return LabelBlocks(row_labels, row_labels.T, statistics)
        logsumexp_all = inputs.gather(logsumexp)
        col_labels = logits.sub_(logsumexp_all[None, :]).exp_()  # in place: the logits are not needed again
        if self.hard_mix:  # the identity's columns of a block of rows are its rows: the same mix
            col_labels = self._mixed(col_labels, rows)
        return LabelBlocks(row_labels, col_labels, statistics)

    def _mixed(self, block: Tensor, rows: slice) -> Tensor:
        """``a * I[R, :] + (1 - a) * block`` for the block of rows ``R`` (in place on ``block``)."""
        own = torch.arange(block.shape[0], device=block.device)
        block.mul_(1.0 - self.hard_mix)
        block[own, own + rows.start] += self.hard_mix
        return block

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, labels={self.labels!r}, teacher_tau={self.teacher_tau}, "
            f"hard_mix={self.hard_mix})"
        )


def _entropy_sum(labels: Tensor) -> Tensor:
    """``sum_i -sum_j w_ij log w_ij`` of a block of label rows (``0 log 0 = 0``), detached."""
    return -torch.special.xlogy(labels, labels).sum().detach()


class InfoNCELoss(ContrastiveLoss):
    """Hard labels (Eq. 3): only the translation is a positive; symmetric InfoNCE, TMS optional.

    With ``lam=None`` it is ``cross_entropy(S / tau, arange) + cross_entropy(S.T / tau, arange)`` for
    ``S = cos(src, tgt)`` (LaBSE, mE5). It needs no teacher.
    """

    name = "infonce"

    def label_blocks(self, inputs: LossInputs, rows: slice) -> LabelBlocks:
        reference = inputs.src_all.detach()
        count = rows.stop - rows.start
        eye = torch.zeros(count, inputs.batch_size, dtype=reference.dtype, device=reference.device)
        own = torch.arange(count, device=reference.device)
        eye[own, own + rows.start] = 1.0
        return LabelBlocks(eye, eye, {})


class HardNegativesLoss(InfoNCELoss):
    """InfoNCE whose row softmax also runs over mined hard negatives (mUSE's translation ranking).

    ``inputs.negatives_all`` holds the student embeddings of every rank's negatives: target-language
    sentences that the teacher finds close to a pair's translation but that are no translation of any
    source of the batch (the training loop never takes a text of the batch as a negative). They join
    every row of ``L_row`` with label 0; ``L_col`` and ``L_mono`` are InfoNCE's.
    """

    name = "hard_negatives"
    needs_negatives = True
