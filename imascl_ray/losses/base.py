"""What every loss takes and gives: one rank's view of a gathered global batch, and a value with its terms.

A loss is an object called on :class:`LossInputs` (as sentence-transformers' losses are called on
features, ``compute_loss_from_embeddings``-style): it owns its maths and says which inputs it needs; how
the embeddings were gathered from the ranks and where the teacher rows came from is the plumbing's
business (:func:`imascl_ray.distributed.gather_inputs`, the training loop's teacher cache).

Convention, for every loss and every term: the value a rank returns, *averaged over the ranks*, is the
global batch's value, and ``backward()`` followed by DDP's gradient *averaging* gives the single-process
gradient. On one process (:meth:`LossInputs.single_process`) that is just the loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor


def _same_process(tensor: Tensor) -> Tensor:
    return tensor


@dataclass(frozen=True)
class LossInputs:
    """A global batch of ``N`` pairs as rank ``offset // B`` of ``world_size`` sees it after the gather.

    The rank encoded pairs ``offset .. offset + B - 1`` (``src``, ``tgt``, with gradient); ``src_all`` and
    ``tgt_all`` are every rank's embeddings in global-rank order (gathered with gradient, so this rank's
    rows are ``src_all[offset : offset + B]``). Teacher rows cover the whole global batch: the training
    loop looks them up in its cache for every pair, so nothing about them is gathered.
    """

    src: Tensor
    """``[B, d]`` this rank's student embeddings of the source sentences."""
    tgt: Tensor
    """``[B, d]`` the same for their translations."""
    src_all: Tensor
    """``[N, d]`` the global batch's source embeddings (``N = B * world_size``)."""
    tgt_all: Tensor
    """``[N, d]`` the global batch's target embeddings."""
    teacher_anchor: Tensor | None = None
    """``[N, d_g]`` teacher embeddings of each pair's anchor side (its higher-priority language)."""
    teacher_other: Tensor | None = None
    """``[N, d_g]`` teacher embeddings of each pair's other side."""
    negatives_all: Tensor | None = None
    """``[M, d]`` student embeddings of every rank's mined hard negatives (target-language sentences)."""
    offset: int = 0
    """Where this rank's rows start in the global batch."""
    world_size: int = 1
    gather: Callable[[Tensor], Tensor] = field(default=_same_process, repr=False)
    """Concatenates a per-row tensor of every rank along dim 0, in rank order (the identity on one
    process): how a loss in its local form exchanges ``N`` numbers instead of building ``N x N``."""

    def __post_init__(self) -> None:
        rows, n = self.src.shape[0], self.src_all.shape[0]
        problems = []
        if self.tgt.shape != self.src.shape:
            problems.append(f"tgt {list(self.tgt.shape)} is not the shape of src {list(self.src.shape)}")
        if self.tgt_all.shape != self.src_all.shape:
            problems.append(
                f"tgt_all {list(self.tgt_all.shape)} differs from src_all {list(self.src_all.shape)}"
            )
        if n != rows * self.world_size or not 0 <= self.offset <= n - rows:
            problems.append(
                f"{self.world_size} rank(s) of {rows} rows cannot make a batch of {n} with this rank at "
                f"{self.offset}"
            )
        for name in ("teacher_anchor", "teacher_other"):
            teacher = getattr(self, name)
            if teacher is not None and teacher.shape[0] != n:
                problems.append(f"{name} covers {teacher.shape[0]} pairs, the global batch {n}")
        if problems:
            raise ValueError("inconsistent loss inputs: " + "; ".join(problems))

    @classmethod
    def single_process(
        cls,
        src: Tensor,
        tgt: Tensor,
        teacher_anchor: Tensor | None = None,
        teacher_other: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> LossInputs:
        """The inputs of one process holding the whole batch."""
        return cls(src, tgt, src, tgt, teacher_anchor, teacher_other, negatives)

    @property
    def batch_size(self) -> int:
        """``N``: pairs in the global batch."""
        return self.src_all.shape[0]

    @property
    def rows(self) -> slice:
        """This rank's rows of the global batch."""
        return slice(self.offset, self.offset + self.src.shape[0])


@dataclass(frozen=True)
class LossOutput:
    """A loss's value to back-propagate, its parts, and statistics of its labels (detached scalars).

    All follow the module's convention: averaged over ranks, each is the global batch's value (the
    training loop averages them in one all-reduce, so what it logs is global in every form).
    """

    value: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    """The summands of the value, unweighted (``cross``, ``mono``; ``mse_src``, ``mse_tgt``)."""
    statistics: dict[str, Tensor] = field(default_factory=dict)
    """What the value does not depend on but a run is read by (the soft labels' entropy, diagonal)."""


class Loss(ABC):
    """A training objective on a gathered batch; subclasses set what they need and implement ``__call__``."""

    name: str = ""
    """The ``loss.name`` that builds it."""
    needs_teacher: bool = False
    """Whether ``teacher_anchor`` (and ``teacher_other``, for average labels) must be given."""
    needs_negatives: bool = False
    """Whether ``negatives_all`` (embeddings of mined hard negatives) must be given."""

    @abstractmethod
    def __call__(self, inputs: LossInputs) -> LossOutput: ...

    def check(self, inputs: LossInputs) -> None:
        """Raise ``ValueError`` when ``inputs`` lack what this loss needs, or hold what it would ignore."""
        if self.needs_teacher and inputs.teacher_anchor is None:
            raise ValueError(f"the {self.name} loss needs the teacher embeddings of the anchor side")
        if self.needs_negatives and inputs.negatives_all is None:
            raise ValueError(f"the {self.name} loss needs the embeddings of mined hard negatives")
        if not self.needs_negatives and inputs.negatives_all is not None:
            raise ValueError(f"the {self.name} loss takes no hard negatives (loss.name=hard_negatives does)")
