"""The per-worker training loop: one data-parallel rank of a soft-contrastive run, in plain PyTorch.

Each step the rank encodes its slice of the global batch, gathers every rank's embeddings with
gradient, looks the soft labels' teacher embeddings up in the cache for the whole global batch, and
takes an AdamW step on the loss the config names. Every ``log_every`` steps it reports training
metrics; every ``eval_every`` steps rank 0 validates (bitext retrieval accuracy both ways on each language
pair's held-out split), every rank learns the score, and a checkpoint is reported with it; ``patience``
validations without improvement stop the run on every rank at once.

How reports leave the loop is the caller's business (:class:`Reporter`): the Ray layer forwards them
to ``ray.train.report``; tests can collect them in a list. The loop knows nothing of Ray.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist

from imascl_ray.config import Config
from imascl_ray.distributed import distributed_loss
from imascl_ray.engine.checkpoint import load_checkpoint, save_checkpoint
from imascl_ray.engine.encode import make_encoding
from imascl_ray.engine.guards import NonFiniteLossError, check_finite
from imascl_ray.engine.optim import build_optimizer, linear_schedule
from imascl_ray.engine.precision import autocast, grad_scaler, resolve_precision
from imascl_ray.prepare import PreparedRun, load_student

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

    epoch: int = 0
    step: int = 0
    """Steps done in ``epoch``: the next batch to run."""
    global_step: int = 0
    best_score: float = -math.inf
    evaluations_since_best: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _broadcast(value: Any, context: RankContext) -> Any:
    """Rank 0's ``value`` on every rank (validation runs on rank 0 only)."""
    if context.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _maybe_inject_failure(config: Config, context: RankContext, global_step: int, marker_dir: Path) -> None:
    """Kill this process once at ``debug.fail_at_step`` on ``debug.fail_rank`` (fault-tolerance tests)."""
    debug = config.debug
    if debug.fail_at_step is None or global_step != debug.fail_at_step or context.rank != debug.fail_rank:
        return
    marker = marker_dir / f"failed-at-step-{global_step}"
    if marker.exists():
        return
    marker.write_text(f"rank {context.rank} killed itself at step {global_step}\n")
    logger.warning("debug.fail_at_step: killing rank %d at step %d", context.rank, global_step)
    # Die mid-step, as a real crash would: Ray's controller registers reported checkpoints a poll later,
    # and a process that vanished within milliseconds of a report could make it restart from the one
    # before (correct, but not the failure this hook is for).
    time.sleep(2.0)
    os._exit(1)


class TrainingLoop:
    """Builds the model, data and optimiser for one rank and runs the steps; see the module docstring."""

    def __init__(
        self, config: Config, prepared: PreparedRun, context: RankContext, reporter: Reporter
    ) -> None:
        from imascl_ray.data import BatchPlan, read_corpus
        from imascl_ray.teacher import TeacherCache

        self.config, self.prepared, self.context, self.report = config, prepared, context, reporter
        self.train = read_corpus(prepared.train)
        self.validation_groups = read_corpus(prepared.validation).groups()
        self.plan = BatchPlan(
            self.train,
            config.schedule.global_batch_size,
            context.world_size,
            config.schedule.seed,
            mixed=config.data.mixed_batches,
            priority=prepared.priority,
        )
        self.src_ids, self.tgt_ids = self.train.sentence_ids()
        self.cache = TeacherCache.open(prepared.teacher_cache)
        n_sentences = len(self.train.sentences())
        # Sentence id -> cache row: the identity for the run's own cache; a sweep's shared cache (over
        # several pair sets' sentences) comes with the rows of this run's sentences.
        if prepared.teacher_rows:
            self.teacher_row = np.load(prepared.teacher_rows)
        else:
            self.teacher_row = np.arange(len(self.cache), dtype=np.int64)
        out_of_range = n_sentences > 0 and self.teacher_row.max() >= len(self.cache)
        if len(self.teacher_row) != n_sentences or out_of_range:
            raise ValueError(
                f"{prepared.teacher_cache} ({len(self.cache)} sentences, {len(self.teacher_row)} mapped) "
                f"does not match the training corpus ({n_sentences} sentences): prepare the run again"
            )
        self.hard_negatives = np.load(prepared.hard_negatives) if prepared.hard_negatives else None

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
            self.position = Position(**saved)
            if context.rank == 0:
                logger.info(
                    "resuming at epoch %d step %d (global step %d)",
                    self.position.epoch,
                    self.position.step,
                    self.position.global_step,
                )
        self.marker_dir = Path(prepared.directory)

    # ------------------------------------------------------------------------------------------------
    def _teacher_rows(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher embeddings of the anchor side and the other side of every pair of the global batch."""
        rows = batch.pair_indices
        anchor_is_src = np.asarray(batch.anchor_sides) == "src"
        anchor_ids = np.where(anchor_is_src, self.src_ids[rows], self.tgt_ids[rows])
        other_ids = np.where(anchor_is_src, self.tgt_ids[rows], self.src_ids[rows])
        device = self.context.device
        anchor, other = self.teacher_row[anchor_ids], self.teacher_row[other_ids]
        return self.cache.lookup(anchor).to(device), self.cache.lookup(other).to(device)

    def _negative_texts(self, batch, local_rows: np.ndarray) -> list[str] | None:
        """Targets of each local pair's mined hard negatives, skipping pairs of this very batch."""
        if self.hard_negatives is None:
            return None
        in_batch = set(batch.pair_indices.tolist())
        k = self.config.loss.hard_negatives
        texts = []
        for row in local_rows:
            candidates = [int(c) for c in self.hard_negatives[row] if int(c) not in in_batch]
            candidates += [int(c) for c in self.hard_negatives[row] if int(c) in in_batch]  # rare: fill up
            texts.extend(self.train.tgt[c] for c in candidates[:k])
        return texts

    def _loss(self, src, tgt, teacher_anchor, teacher_other, negatives, *, lam_override: Any = "config"):
        loss = self.config.loss
        lam = (loss.lam if loss.tms else None) if lam_override == "config" else lam_override
        kind = "hard" if loss.label == "hard_negatives" else loss.label
        return distributed_loss(
            src,
            tgt,
            teacher_anchor,
            teacher_other,
            kind=kind,
            tau=loss.tau,
            teacher_tau=loss.teacher_tau,
            lam=lam,
            margin=loss.margin,
            local=loss.local,
            teacher_scope="global",
            negatives=negatives,
        )

    def _label_statistics(
        self, teacher_anchor: torch.Tensor, teacher_other: torch.Tensor
    ) -> dict[str, float]:
        """Mean row entropy and diagonal mass of the soft labels: how far they are from one-hot."""
        from imascl_ray.losses import soft_labels

        loss = self.config.loss
        if loss.label not in ("priority", "average"):
            return {}
        labels = soft_labels(
            teacher_anchor,
            teacher_other,
            kind=loss.label,
            tau=loss.teacher_tau if loss.teacher_tau is not None else loss.tau,
        )
        entropy = -(labels * labels.clamp_min(1e-30).log()).sum(dim=1).mean()
        return {"labels/entropy": float(entropy), "labels/diagonal": float(labels.diagonal().mean())}

    def step(self, batch) -> dict[str, float]:
        """One optimisation step on ``batch``; returns its training metrics.

        The random state (dropout) is seeded from (seed, global step, rank): it differs across ranks and
        steps, as it should, and a run resumed from any checkpoint replays exactly the same masks on
        every rank, although only rank 0 writes the checkpoint.
        """
        rank = self.context.rank
        torch.manual_seed(hash((self.config.schedule.seed, self.position.global_step, rank)) % 2**63)
        local_rows = batch.rank_slice(rank)
        src_texts = [self.train.src[i] for i in local_rows]
        tgt_texts = [self.train.tgt[i] for i in local_rows]
        negative_texts = self._negative_texts(batch, local_rows)
        teacher_anchor, teacher_other = self._teacher_rows(batch)
        encoding = make_encoding(
            self.config.scaling.encoding,
            self.model,
            micro_batch_size=self.config.scaling.micro_batch_size,
            autocast=lambda: autocast(self.precision, self.context.device),
        )
        with autocast(self.precision, self.context.device):
            src, tgt, negatives = encoding.embed(src_texts, tgt_texts, negative_texts)
            loss = self._loss(src, tgt, teacher_anchor, teacher_other, negatives)
        value = self._mean_over_ranks(loss.detach())
        if not math.isfinite(value):  # every rank sees the same mean, so all stop together
            self._explain_non_finite(src, tgt, teacher_anchor, teacher_other, negatives, value)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        encoding.backward()  # GradCache: re-encodes with gradient; plain and bucketed: nothing to do
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return {"train/loss": value, "train/grad_norm": float(grad_norm), "train/lr": lr}

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        """The global loss: each rank's value averaged over ranks (the local form's shares differ)."""
        if self.context.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.context.world_size
        return float(value)

    def _explain_non_finite(self, src, tgt, teacher_anchor, teacher_other, negatives, value: float) -> None:
        """Raise with the step and every loss term, so the user sees which one broke."""
        terms = {"loss": value}
        if self.config.loss.label != "mse":
            with torch.no_grad():
                cross = float(
                    self._loss(src, tgt, teacher_anchor, teacher_other, negatives, lam_override=None)
                )
            terms["cross"] = cross
            if self.config.loss.tms:
                terms["mono"] = value - self.config.loss.lam * cross
        check_finite(self.position.global_step + 1, terms)
        raise NonFiniteLossError(f"step {self.position.global_step + 1}: non-finite loss {value}")

    def validate(self) -> dict[str, float]:
        """Bitext accuracy both ways on each language pair's held-out split (rank 0 computes; all receive)."""
        from imascl_ray.eval.local_suite import evaluate_pair_groups, flatten_local

        metrics = None
        if self.context.rank == 0:
            self.student.eval()
            try:
                results = evaluate_pair_groups(
                    self.student, self.validation_groups, device=self.context.device
                )
            finally:
                self.student.train()
            metrics = flatten_local(results, namespace="val")
        return _broadcast(metrics, self.context)

    def _checkpoint_and_report(self, metrics: dict[str, float]) -> None:
        with tempfile.TemporaryDirectory(prefix="imascl-ckpt-") as folder:
            checkpoint = None
            if self.context.rank == 0:
                checkpoint = save_checkpoint(
                    folder,
                    model=self.student,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    scaler=self.scaler,
                    position=self.position.as_dict(),
                )
            self.report(metrics, checkpoint)

    def run(self) -> dict[str, Any]:
        """Train until the step budget, the epochs or the patience runs out; returns a summary."""
        schedule = self.config.schedule
        position = self.position
        started, window_start, window_pairs = time.perf_counter(), time.perf_counter(), 0
        window_losses: list[float] = []
        stop = position.global_step >= self.total_steps
        if self.context.rank == 0:
            logger.info(
                "training: %d steps (%d per epoch), global batch %d on %d worker(s), %s",
                self.total_steps,
                self.plan.steps_per_epoch,
                schedule.global_batch_size,
                self.context.world_size,
                self.precision.name,
            )
        while not stop:
            for batch in self.plan.batches(position.epoch, position.step):
                _maybe_inject_failure(self.config, self.context, position.global_step, self.marker_dir)
                metrics = self.step(batch)
                position.step += 1
                position.global_step += 1
                window_losses.append(metrics["train/loss"])
                window_pairs += schedule.global_batch_size
                last = position.global_step >= self.total_steps
                if position.global_step % schedule.log_every == 0 or last:
                    elapsed = time.perf_counter() - window_start
                    metrics |= {
                        "train/loss": float(np.mean(window_losses)),
                        "pairs_per_s": window_pairs / elapsed,
                        "epoch": position.epoch,
                        "step": position.global_step,
                    }
                    metrics |= self._label_statistics(*self._teacher_rows(batch))
                    if self.context.rank == 0:
                        eta = (
                            (time.perf_counter() - started)
                            / position.global_step
                            * (self.total_steps - position.global_step)
                        )
                        logger.info(
                            "step %d/%d  loss %.4f  lr %.2e  %.1f pairs/s  eta %.0f s",
                            position.global_step,
                            self.total_steps,
                            metrics["train/loss"],
                            metrics["train/lr"],
                            metrics["pairs_per_s"],
                            eta,
                        )
                    window_start, window_pairs, window_losses = time.perf_counter(), 0, []
                if position.global_step % schedule.eval_every == 0 or last:
                    scores = self.validate()
                    if scores[SCORE] > position.best_score:
                        position.best_score, position.evaluations_since_best = scores[SCORE], 0
                    else:
                        position.evaluations_since_best += 1
                    if position.step == self.plan.steps_per_epoch:  # a checkpoint at an epoch's end resumes
                        position.epoch, position.step = position.epoch + 1, 0  # at the next epoch's start
                    metrics |= scores | {"val/best": position.best_score, "step": position.global_step}
                    if self.context.rank == 0:
                        logger.info(
                            "validation at step %d: %s %.4f (best %.4f)",
                            position.global_step,
                            SCORE,
                            scores[SCORE],
                            position.best_score,
                        )
                    self._checkpoint_and_report(metrics)
                    patience = schedule.patience
                    stop = last or (patience is not None and position.evaluations_since_best >= patience)
                    if stop and not last and self.context.rank == 0:
                        logger.info("early stop: %d validations without improvement", patience)
                    if position.step == 0:
                        break
                elif position.global_step % schedule.log_every == 0:
                    self.report(metrics, None)
                if stop:
                    break
            else:
                position.epoch, position.step = position.epoch + 1, 0
        return {
            "best_score": position.best_score,
            "global_step": position.global_step,
            "seconds": time.perf_counter() - started,
        }


def train_rank(
    config: Config, prepared: PreparedRun, context: RankContext, reporter: Reporter
) -> dict[str, Any]:
    """Build this rank's :class:`TrainingLoop` and run it."""
    return TrainingLoop(config, prepared, context, reporter).run()


ReporterFactory = Callable[[int], Reporter]
