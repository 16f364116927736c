"""The per-worker training loop: one data-parallel rank of a run, in plain PyTorch.

Each step the rank encodes its slice of the global batch, gathers every rank's embeddings with
gradient, and calls the loss the config names (:func:`imascl_ray.losses.build_loss`) on them, with the
teacher rows of the whole global batch looked up in the cache; then an AdamW step. One counter, the
global step, says where the run stands: the epoch and the step in it follow from it
(:meth:`BatchPlan.position`). Every ``log_every`` steps the rank reports its training metrics (global
values: every loss term averaged over the ranks); every ``eval_every`` steps rank 0 validates (bitext
retrieval accuracy both ways on each language pair's held-out split), every rank learns the score, and a
checkpoint goes with the report; ``patience`` validations without improvement stop every rank at once.

How reports leave the loop is the caller's business (:class:`Reporter`): the Ray layer forwards them
to ``ray.train.report``; tests can collect them in a list. The loop knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.profiler import record_function

from imascl_ray.config import Config
from imascl_ray.distributed import ShardedEncoder, gather_inputs, mean_over_ranks
from imascl_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from imascl_ray.engine.encode import make_encoding
from imascl_ray.engine.faults import maybe_fail
from imascl_ray.engine.guards import check_finite
from imascl_ray.engine.optim import build_optimizer, linear_schedule
from imascl_ray.engine.precision import autocast, grad_scaler, optimizer_step, resolve_precision
from imascl_ray.engine.prefetch import PREFETCH_ENV, prefetch_executor, prefetched
from imascl_ray.engine.timing import step_timer
from imascl_ray.losses import build_loss
from imascl_ray.preparation import PreparedRun, load_student

logger = logging.getLogger(__name__)

SCORE = "val/mean/acc"
"""The validation metric: mean over language pairs of bitext accuracy averaged over both directions."""


class Reporter(Protocol):
    """Where the loop's metrics and checkpoints go; every rank calls it at the same steps."""

    def __call__(self, metrics: dict[str, float], checkpoint: Path | None) -> None: ...


@dataclass
class RankContext:
    """Who this process is in the data-parallel group, and what it resumes from."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resume_from: Path | None = None
    """A checkpoint folder written by this loop (Ray hands back the latest one after a failure)."""


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint so a resumed run neither repeats nor skips a step."""

    global_step: int = 0
    """Steps done: the index of the next step to run. The epoch and the step in it follow from it."""
    best_score: float = -math.inf
    evaluations_since_best: int = 0

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> Position:
        """From a checkpoint's position (which also records the epoch and step, for people to read)."""
        return cls(**{item.name: saved[item.name] for item in dataclasses.fields(cls)})


@dataclass
class _Window:
    """Training metrics between two reports: the means of the loss terms, the last step's others."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)
    last: dict[str, float] = field(default_factory=dict)

    def add(self, terms: dict[str, float], others: dict[str, float], skipped: bool) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.skipped += skipped
        self.last = others

    def metrics(self, pairs_per_step: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return (
            {name: total / self.steps for name, total in self.sums.items()}
            | self.last
            | {
                "train/skipped_steps": float(self.skipped),
                "pairs_per_s": self.steps * pairs_per_step / elapsed,
            }
        )


@dataclass
class StepInputs:
    """What a step needs from the host before it encodes: this rank's texts and the teacher rows."""

    src_texts: list[str]
    tgt_texts: list[str]
    negative_texts: list[str] | None
    teacher_anchor: torch.Tensor | None
    teacher_other: torch.Tensor | None


def _broadcast(value: Any, context: RankContext) -> Any:
    """Rank 0's ``value`` on every rank."""
    if context.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class TrainingLoop:
    """Builds the model, data, loss and optimiser for one rank and runs the steps; see the module doc."""

    def __init__(
        self, config: Config, prepared: PreparedRun, context: RankContext, reporter: Reporter
    ) -> None:
        from imascl_ray.data import read_corpus
        from imascl_ray.engine.data_input import open_pairs
        from imascl_ray.engine.negatives import HardNegativeTexts
        from imascl_ray.teacher import TeacherCache

        self.config, self.prepared, self.context, self.report = config, prepared, context, reporter
        self.loss = build_loss(config.loss)
        self.validation_groups = read_corpus(prepared.validation).groups()
        # The cache is memory-mapped and its size checked, not its checksum (the driver checked it).
        self.cache = TeacherCache.open(prepared.teacher_cache)
        # The plan and the rows: memory-mapped from the run's stream folder (engine.data_input).
        self.pairs = open_pairs(config, prepared, context.world_size, self.cache)
        self.plan = self.pairs
        self.negatives: HardNegativeTexts | None = None
        if self.loss.needs_negatives:
            if not prepared.hard_negatives:
                raise ValueError(
                    f"the {self.loss.name} loss needs mined hard negatives: prepare the run again"
                )
            # Hard negatives pick texts anywhere in the language pair: this loss still reads the whole
            # training corpus in every worker (not streamed).
            mined = np.load(prepared.hard_negatives)
            self.negatives = HardNegativeTexts(
                read_corpus(prepared.train), mined, config.loss.hard_negatives, config.schedule.seed
            )

        model = config.model
        self.student = load_student(model, prepared.student)
        if model.freeze_embeddings:
            self.student.freeze_word_embeddings()
        self.student.to(context.device).train()
        self.model: torch.nn.Module = self.student
        if context.world_size > 1:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.student, device_ids=device_ids)

        self.total_steps = config.schedule.max_steps or self.plan.total_steps(config.schedule.epochs)
        optim = config.optim
        self.optimizer = build_optimizer(
            self.student.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas
        )
        self.scheduler = linear_schedule(
            self.optimizer, total_steps=self.total_steps, warmup_ratio=optim.warmup_ratio
        )
        self.precision = resolve_precision(config.scaling.precision, context.device)
        self.scaler = grad_scaler(self.precision, context.device)
        self.position = Position()
        if context.resume_from is not None:
            saved = load_checkpoint(
                context.resume_from,
                model=self.student,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
            )
            self.position = Position.from_saved(saved)
            if context.rank == 0:
                epoch, step = self.plan.position(self.position.global_step)
                logger.info(
                    "resuming at epoch %d step %d (global step %d)", epoch, step, self.position.global_step
                )
        self.marker_dir = Path(prepared.directory)
        self.timer = step_timer()  # per-phase step times when IMASCL_STEP_TIMING=1; free otherwise
        self.prefetch = os.environ.get(PREFETCH_ENV) != "0"  # the next batch assembled during the step

    @functools.cached_property
    def train(self):
        """The whole training corpus, read on first use: for tools and benchmarks, never by the steps
        (they read their rows from :attr:`pairs`), so a rank does not hold the corpus unless asked."""
        from imascl_ray.data import read_corpus

        return read_corpus(self.prepared.train)

    # ------------------------------------------------------------------------------------------------
    def _teacher_rows(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher embeddings of the anchor side and the other side of every pair of the global batch."""
        anchor_is_src = np.asarray(batch.anchor_sides) == "src"
        src_rows, tgt_rows = self.pairs.teacher_rows(batch.pair_indices)
        anchor = np.where(anchor_is_src, src_rows, tgt_rows)
        other = np.where(anchor_is_src, tgt_rows, src_rows)
        device = self.context.device
        return self.cache.lookup(anchor).to(device), self.cache.lookup(other).to(device)

    def assemble(self, batch, global_step: int) -> StepInputs:
        """Step ``global_step``'s inputs from ``batch`` (pure: :mod:`imascl_ray.engine.prefetch` may run it
        in a background thread, a step ahead)."""
        local_rows = batch.rank_slice(self.context.rank)
        src_texts, tgt_texts = self.pairs.texts(local_rows)  # only these rows' pages are read
        negative_texts = None
        if self.negatives is not None:
            negative_texts = self.negatives.texts(batch.pair_indices, local_rows, global_step)
        teacher_anchor = teacher_other = None
        if self.loss.needs_teacher:
            teacher_anchor, teacher_other = self._teacher_rows(batch)
        return StepInputs(src_texts, tgt_texts, negative_texts, teacher_anchor, teacher_other)

    def step(
        self, batch, inputs: StepInputs | None = None
    ) -> tuple[dict[str, float], dict[str, float], bool]:
        """One optimisation step on ``batch``: ``(global loss terms, other metrics, skipped)``; the terms
        (``train/loss``, ``train/cross``, ..., ``labels/entropy``) are averaged over the ranks.

        encode this rank's slice -> gather every rank's -> loss(inputs) -> backward -> optimiser step.
        Each phase is a ``torch.profiler`` range (``imascl/embed``, ``imascl/loss``, ``imascl/backward``,
        ``imascl/re-encode``, ``imascl/optimizer``), so a profile of a run shows where its step goes.
        ``skipped``: the fp16 grad scaler found inf/NaN gradients and skipped the update (the learning
        rate schedule then waits too). The random state (dropout) is seeded from (seed, global step,
        rank): it differs across ranks and steps, as it should, and a run resumed from any checkpoint
        replays exactly the same masks on every rank, although only rank 0 writes the checkpoint.
        """
        rank, global_step, timer = self.context.rank, self.position.global_step, self.timer
        torch.manual_seed(hash((self.config.schedule.seed, global_step, rank)) % 2**63)
        if inputs is None:  # not assembled ahead (a direct call, or prefetch off)
            with timer.phase("assemble"):
                inputs = self.assemble(batch, global_step)
        teacher_anchor, teacher_other = inputs.teacher_anchor, inputs.teacher_other
        encoding = make_encoding(
            self.config.scaling.encoding,
            self.model,
            micro_batch_size=self.config.scaling.micro_batch_size,
            autocast=lambda: autocast(self.precision, self.context.device),
        )
        with autocast(self.precision, self.context.device):
            with record_function("imascl/embed"), timer.phase("forward"):
                src, tgt, negatives = encoding.embed(
                    inputs.src_texts, inputs.tgt_texts, inputs.negative_texts
                )
            with record_function("imascl/loss"):
                with timer.phase("gather"):
                    gathered = gather_inputs(src, tgt, teacher_anchor, teacher_other, negatives)
                with timer.phase("loss"):
                    output = self.loss(gathered)
        # Global values, the same on every rank: a non-finite loss stops all ranks together.
        parts = {"loss": output.value, **output.terms}
        with timer.phase("mean_over_ranks"):
            averaged = mean_over_ranks(
                {f"train/{name}": value for name, value in parts.items()}
                | {f"labels/{name}": value for name, value in output.statistics.items()}
            )
        if not math.isfinite(averaged["train/loss"]):
            check_finite(global_step + 1, {name: averaged[f"train/{name}"] for name in parts})
        self.optimizer.zero_grad(set_to_none=True)
        with record_function("imascl/backward"), timer.phase("backward"):
            self.scaler.scale(output.value).backward()
        with record_function("imascl/re-encode"), timer.phase("backward"):
            encoding.backward()  # GradCache: re-encodes with gradient; plain and bucketed: nothing to do
        with record_function("imascl/optimizer"), timer.phase("optimizer"):
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.student.parameters(), self.config.optim.max_grad_norm
            )
            lr = self.scheduler.get_last_lr()[0]
            stepped = optimizer_step(self.scaler, self.optimizer)
        if stepped:
            self.scheduler.step()
        return averaged, {"train/grad_norm": float(grad_norm), "train/lr": lr}, not stepped

    def validate(self) -> dict[str, float]:
        """Bitext accuracy both ways on each language pair's held-out split.

        Every rank encodes its share of the sentences (:class:`ShardedEncoder`); rank 0's scores, from the
        gathered embeddings, go to every rank, so all ranks decide alike on the best checkpoint.
        """
        from imascl_ray.eval.local_suite import evaluate_pair_groups, flatten_local

        encoder = ShardedEncoder(self.student, device=self.context.device)
        self.student.eval()
        try:
            results = evaluate_pair_groups(encoder, self.validation_groups, device=self.context.device)
        finally:
            self.student.train()
        return _broadcast(flatten_local(results, namespace="val"), self.context)

    def _track(self, scores: dict[str, float]) -> dict[str, float]:
        """Record a validation in the position (best score, patience); returns the metrics to report."""
        position = self.position
        if scores[SCORE] > position.best_score:
            position.best_score, position.evaluations_since_best = scores[SCORE], 0
        else:
            position.evaluations_since_best += 1
        if self.context.rank == 0:
            logger.info(
                "validation at step %d: %s %.4f (best %.4f)",
                position.global_step,
                SCORE,
                scores[SCORE],
                position.best_score,
            )
        return scores | {"val/best": position.best_score}

    def _report(self, metrics: dict[str, float], *, with_checkpoint: bool) -> None:
        """The one place reports leave the loop (with a checkpoint of rank 0 after a validation)."""
        with tempfile.TemporaryDirectory(prefix="imascl-ckpt-") as folder:
            checkpoint = None
            if with_checkpoint and self.context.rank == 0:
                epoch, step = self.plan.position(self.position.global_step)
                with self.timer.phase("checkpoint"):
                    checkpoint = save_checkpoint(
                        folder,
                        model=self.student,
                        optimizer=self.optimizer,
                        scheduler=self.scheduler,
                        scaler=self.scaler,
                        position=dataclasses.asdict(self.position) | {"epoch": epoch, "step": step},
                    )
            with self.timer.phase("report"):
                self.report(metrics, checkpoint)

    def _patience_ran_out(self) -> bool:
        patience = self.config.schedule.patience
        return patience is not None and self.position.evaluations_since_best >= patience

    def run(self) -> dict[str, Any]:
        """Train until the step budget, the epochs or the patience runs out; returns a summary."""
        schedule, started = self.config.schedule, time.perf_counter()
        if self.context.rank == 0:
            logger.info(
                "training: %d steps (%d per epoch), global batch %d on %d worker(s), %s, %s",
                self.total_steps,
                self.plan.steps_per_epoch,
                schedule.global_batch_size,
                self.context.world_size,
                self.precision.name,
                self.loss,
            )
        executor = prefetch_executor() if self.prefetch else None
        try:
            return self._steps(started, executor)
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def _steps(self, started: float, executor: ThreadPoolExecutor | None) -> dict[str, Any]:
        """The steps of :meth:`run`, each step's inputs assembled ahead in ``executor`` (None: inline)."""
        schedule, position, timer = self.config.schedule, self.position, self.timer
        first_step, window, batches = position.global_step, _Window(), None
        while position.global_step < self.total_steps and not self._patience_ran_out():
            timer.start_step()
            epoch, step_in_epoch = self.plan.position(position.global_step)
            if batches is None or step_in_epoch == 0:  # the one place an epoch starts (or resumes)
                planned = self.plan.batches(epoch, step_in_epoch)
                batches = prefetched(planned, self.assemble, position.global_step, executor)
            with timer.phase("next_batch"):  # with prefetch: the wait for the background assembly
                batch, inputs = next(batches)
            maybe_fail(position.global_step, self.context.rank, self.marker_dir)
            window.add(*self.step(batch, inputs))
            position.global_step += 1

            last = position.global_step >= self.total_steps
            validate = position.global_step % schedule.eval_every == 0 or last
            if not (validate or position.global_step % schedule.log_every == 0):
                timer.end_step()
                continue
            metrics = window.metrics(schedule.global_batch_size)
            metrics |= {"epoch": epoch, "step": position.global_step}
            if self.context.rank == 0:
                seconds_per_step = (time.perf_counter() - started) / (position.global_step - first_step)
                logger.info(
                    "step %d/%d  loss %.4f  lr %.2e  %.1f pairs/s  eta %.0f s",
                    position.global_step,
                    self.total_steps,
                    metrics["train/loss"],
                    metrics["train/lr"],
                    metrics["pairs_per_s"],
                    seconds_per_step * (self.total_steps - position.global_step),
                )
            if validate:
                with timer.phase("validate"):
                    metrics |= self._track(self.validate())
            self._report(metrics, with_checkpoint=validate)
            window = _Window()
            timer.end_step()
        if self._patience_ran_out() and self.context.rank == 0:
            logger.info("early stop: %d validations without improvement", schedule.patience)
        summary = {
            "best_score": position.best_score,
            "global_step": position.global_step,
            "seconds": time.perf_counter() - started,
        }
        if timer.enabled:
            summary["timing"] = timer.summary() | {"prefetch": executor is not None}
        return summary
