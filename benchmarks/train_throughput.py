"""Training throughput on CPU: the project's soft and hard steps, sentence-transformers, the authors' setup.

Same model (the offline multilingual-e5-small, word embeddings frozen in every variant unless
``--unfrozen``), same data (this machine's gettext localisation pairs, en-xx, one language pair per
global batch as the project plans them), same global batch, same optimiser (AdamW, linear schedule,
gradient clipping at 1.0), one process, fp32, every core the process may use (``torch`` threads = its
CPU affinity):

* (a) ``soft``: the project's step (:meth:`imascl_ray.engine.loop.TrainingLoop.step`) with Priority labels
  from the teacher *cache* and TMS (``lam=0.1``), one batch per side padded to its longest text
  (``scaling.encoding=plain``), unpadded inside the model (``model.unpad``: the dense layers see only
  real tokens, :mod:`imascl_ray.unpad`);
* (a') ``soft_bucketed``: the project's default step: length-bucketed (``scaling.encoding=bucketed``: the
  rank's texts sorted by token count and encoded in micro-batches of ``scaling.micro_batch_size``) and
  unpadded; the same loss over the same random batch;
* (a'') ``soft_padded``: (a') with ``model.unpad=false`` (every layer on the padded micro-batches: the
  project's step before unpadding), so ``bucketed_over_padded`` is what unpadding gains;
* (b) ``hard``: the same loop as (a') with hard labels (InfoNCE, both directions), no teacher;
* (c) ``st``: sentence-transformers' ``MultipleNegativesSymmetricRankingLoss`` the way its trainer runs a
  step: its data collator tokenises the columns (``model.preprocess``, dynamic padding, same prompt and
  ``max_seq_length``), ``collect_features``, the loss module (its own forward per column), backward,
  clipping, AdamW, schedule;
* (d) ``authors``: the authors' settings: every input padded to ``max_length`` 512 (student and teacher,
  padded all through the model) and a live teacher forward (the same model, frozen, on the anchor side
  with the ``query: `` prefix) every step; Priority labels and TMS with weight 1 (their code has no lambda).

(d) cannot run at the global batch of 32 here: at 512 tokens a training forward keeps ~0.65 GB of
activations per sequence (attention probabilities of 12 layers x 12 heads x 512 x 512), so 64 sequences
would need ~42 GB. It runs at ``--authors-batch`` pairs (default 4: 8 student sequences, ~5.5 GB; 2 in
``--quick``, to stay under 5 minutes), and
(a) is timed on that same small batch too (``soft_small``, the same loop object): ``soft_over_authors``
is ``soft_small / authors``, like with like. At a fixed 512 tokens (d)'s cost per pair does not depend on
the batch (the loss's ``N x N`` part is negligible), so ``soft_over_authors_at_global_batch`` (a at 32 over
d at 4) is also reported; a smaller batch only makes (a) pay its fixed per-step costs over fewer pairs,
so the like-with-like ratio is the conservative one.

Timing: one warm-up round (not timed), then ``--rounds`` rounds in which every variant runs once, in an
order that rotates each round, on the same batch (round ``r`` uses batch ``r``: two runs time the same
batches); (d) is so slow that it runs every ``--authors-every``-th round only, at least 5 times. The
headline clock is wall time (what a user times); ``--cpu-time`` instead reads the process's CPU time on
1 torch thread, a diagnostic for a loaded machine (labelled so in the JSON, not the headline). Every
ratio is the median over rounds of the two variants' times in the same round, with its min and max
(``ratios``); the load average before and after the timing is in ``stability``, which says whether the
machine was quiet enough for two runs to agree within 0.1 and, if not, why.

The last line of stdout is one JSON object with pairs/s of each variant and ``soft_over_st`` (a/c),
``bucketed_over_st`` (a'/c), ``bucketed_over_padded`` (a'/a''), ``soft_over_hard`` (a/b),
``soft_over_authors`` (a/d) (medians; ``ratios`` has min / median / max), the padding left in the
batches' shapes (``real_token_fraction``: ``plain``, ``bucketed``) and, measured by a hook on every
linear layer of the encoder during one step of each variant, the share of real tokens among the rows
the dense layers processed (``real_token_fraction.dense_layers``).

A second interleaved phase times (a'), (a'') and (c) at ``--large-batch`` pairs (default 256), where a
random batch is two thirds padding: ``bucketed_over_st_at_large``. Bucketing both is not the comparison:
sentence-transformers' trainer does not bucket (its collator pads each batch to its longest text). At
256 pairs a plain fp32 step of the 12-layer model keeps ~13 GB of activations, more than this shared
machine has to spare, so ``--quick`` runs that phase on the first ``--large-layers`` (2) transformer
layers of the same model, for every variant (say so next to the figure); the full mode uses all layers.

    python benchmarks/train_throughput.py --quick       # < 5 minutes on 2 CPU cores
    python benchmarks/train_throughput.py               # more rounds
    python benchmarks/train_throughput.py --smoke       # tiny random model and corpus, seconds (tests)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _common import (
    add_work_dir,
    cores,
    emit,
    fill_defaults,
    interleaved,
    load_average,
    log,
    machine,
    median,
    ratio_summary,
    rounded,
    set_test_environment,
    stability,
)

TARGETS = {
    "soft_over_st": 1.0,
    "bucketed_over_st": 1.6,
    "soft_over_hard": 0.95,
    "soft_over_authors": 5.0,
    "bucketed_over_st_at_large": 3.0,
    "dense_real_token_fraction": 0.95,
}
MIN_ROUNDS = 5
AUTHORS_MAX_LENGTH = 512


@dataclass
class Setup:
    """What every variant shares."""

    config: Any  # imascl_ray.config.Config of the soft variant
    prepared: Any  # imascl_ray.preparation.PreparedRun
    batches: list[Any]  # GlobalBatch list, cycled through in the same order by every variant
    texts: list[tuple[list[str], list[str], list[str]]]  # per batch: src, tgt, anchor-side texts
    small_batches: list[Any]  # the same at the authors' variant's smaller global batch
    small_texts: list[tuple[list[str], list[str], list[str]]]
    large_batches: list[Any]  # the same at --large-batch (empty when that phase is off)
    large_texts: list[tuple[list[str], list[str], list[str]]]


def build_setup(args: argparse.Namespace) -> Setup:
    from imascl_ray.config import load_config
    from imascl_ray.data import BatchPlan, read_corpus, write_corpus
    from imascl_ray.preparation import prepare_run

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

        model = build_tiny_model(work / "tiny-model")
        corpus = write_corpus(synthetic_parallel_corpus(300), work / "tiny-corpus.parquet")
        data = [f"data.corpus={corpus}", "data.languages=[en,fr]", "data.pair_set=en-fr"]
        data += ["data.max_pairs_per_language_pair=200", "data.validation_pairs=20"]
    else:
        model = "offline:multilingual-e5-small"
        data = ["data.corpus=gettext", "data.languages=[en,fr,ja,ko,ru]", "data.pair_set=en-xx"]
        data += [f"data.max_pairs_per_language_pair={args.pairs_per_language}", "data.validation_pairs=20"]
    overrides = [
        f"model.name={model}",
        f"model.max_length={args.max_length}",
        f"model.freeze_embeddings={str(not args.unfrozen).lower()}",
        f"teacher.max_length={args.max_length}",
        *data,
        "loss.name=soft",
        "loss.labels=priority",
        "loss.tau=0.1",
        "loss.teacher_tau=0.05",
        "loss.tms=true",
        "loss.lam=0.1",
        "optim.lr=3e-5",
        f"schedule.global_batch_size={args.global_batch}",
        "schedule.max_steps=1000",
        "scaling.num_workers=1",
        "scaling.precision=fp32",
        f"tracking.output_dir={work}",
    ]
    config = load_config(None, overrides)
    started = time.perf_counter()
    prepared = prepare_run(config, work / ("run-smoke" if args.smoke else "run"))
    log(f"prepared in {time.perf_counter() - started:.1f}s: student {prepared.student}")
    train = read_corpus(prepared.train)

    def planned(size: int) -> tuple[list[Any], list[tuple[list[str], list[str], list[str]]]]:
        plan = BatchPlan(train, size, 1, config.schedule.seed, priority=prepared.priority)
        batches = list(itertools.islice(plan.batches(0, 0), args.distinct_batches))
        texts = []
        for batch in batches:
            rows = batch.pair_indices
            src, tgt = [train.src[i] for i in rows], [train.tgt[i] for i in rows]
            sides = batch.anchor_sides
            anchors = [s if side == "src" else t for s, t, side in zip(src, tgt, sides, strict=True)]
            texts.append((src, tgt, anchors))
        return batches, texts

    large = planned(args.large_batch) if args.large_batch else ([], [])
    return Setup(config, prepared, *planned(args.global_batch), *planned(args.authors_batch), *large)


def truncated_student(student: str, layers: int | None, directory: Path) -> str:
    """The student folder cut to its first ``layers`` transformer layers (None: the folder as it is)."""
    from imascl_ray.encoder import SentenceEncoder

    if layers is None:
        return student
    encoder = SentenceEncoder.from_pretrained(student)
    if layers >= encoder.model.config.num_hidden_layers:
        return student
    encoder.model.encoder.layer = encoder.model.encoder.layer[:layers]
    encoder.model.config.num_hidden_layers = layers
    return str(encoder.save(directory / f"student-{layers}-layers"))


# ---------------------------------------------------------------------------------------------- (a), (b)
def project_loop(setup: Setup, loss: str, encoding: str, student: str | None = None, unpad: bool = True):
    """The project's own step: a single-rank :class:`TrainingLoop` on the prepared run."""
    from imascl_ray.engine.loop import RankContext, TrainingLoop

    config = setup.config
    config = replace(
        config,
        model=replace(config.model, unpad=unpad),
        loss=replace(config.loss, name=loss),
        scaling=replace(config.scaling, encoding=encoding),
    )
    prepared = setup.prepared if student is None else replace(setup.prepared, student=student)
    return TrainingLoop(config, prepared, RankContext(), lambda metrics, checkpoint: None)


def loop_steps(loop, batches: list[Any]):
    """``step(i)``: the loop's step on the i-th batch (cycling)."""

    def step(i: int) -> None:
        loop.step(batches[i % len(batches)])

    step.transformer = loop.student.model  # what dense_fraction hooks
    return step


# ---------------------------------------------------------------------------------------------- (c)
def sentence_transformers_step(
    setup: Setup, prefix: str, student: str, texts: list[tuple[list[str], list[str], list[str]]]
):
    """One step of sentence-transformers' trainer with ``MultipleNegativesSymmetricRankingLoss``.

    As ``SentenceTransformerTrainer`` does it: its data collator (``model.preprocess`` per column, the
    prompt prepended), ``collect_features``, the loss module, backward, gradient clipping at
    ``max_grad_norm`` 1.0, the Hugging Face default optimiser for torch >= 2.8 (``adamw_torch_fused``:
    ``torch.optim.AdamW(fused=True)``) and its linear schedule.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from transformers import get_linear_schedule_with_warmup

    config = setup.config
    model = SentenceTransformer(student, device="cpu")
    model.max_seq_length = config.model.max_length
    if config.model.freeze_embeddings:
        model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 6.2 suggests MNRL(directions=...): same maths
        loss = MultipleNegativesSymmetricRankingLoss(model, scale=1.0 / config.loss.tau)
    collator = SentenceTransformerDataCollator(preprocess_fn=model.preprocess, prompts=prefix or None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, weight_decay=0.0, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, config.schedule.max_steps)

    def step(i: int) -> None:
        src, tgt, _ = texts[i % len(texts)]
        inputs = collator([{"anchor": s, "positive": t} for s, t in zip(src, tgt, strict=True)])
        # The trainer's own split of the collated batch into per-column features (it reads no state).
        features, labels = SentenceTransformerTrainer.collect_features(None, inputs)
        value = loss(features, labels)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    step.transformer = model[0].auto_model
    return step


# ---------------------------------------------------------------------------------------------- (d)
def authors_step(setup: Setup):
    """The authors' settings: inputs padded to 512 tokens, a live teacher forward every step, lam = 1."""
    import torch

    from imascl_ray.encoder import SentenceEncoder
    from imascl_ray.engine.optim import build_optimizer, linear_schedule
    from imascl_ray.losses import LossInputs, SoftContrastiveLoss
    from imascl_ray.teacher import Teacher

    config = setup.config
    student = SentenceEncoder.from_pretrained(setup.prepared.student, prefix="")
    length = min(AUTHORS_MAX_LENGTH, student.model.config.max_position_embeddings)
    student.max_length = length
    student.unpad = False  # the authors' cost: every layer on all 512 positions
    if config.model.freeze_embeddings:
        student.freeze_word_embeddings()
    student.train()
    teacher = Teacher.from_pretrained(setup.prepared.teacher, prefix="query: ", max_length=length)
    teacher.encoder.unpad = False
    optimizer = build_optimizer(student.parameters(), lr=config.optim.lr)
    scheduler = linear_schedule(optimizer, total_steps=config.schedule.max_steps)
    authors_loss = SoftContrastiveLoss("priority", tau=config.loss.tau, lam=1.0)  # labels at tau too

    def padded(encoder: SentenceEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = encoder.tokenizer(
            [encoder.prefix + text for text in texts],
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        return {key: batch[key] for key in ("input_ids", "attention_mask") if key in batch}

    def step(i: int) -> None:
        src, tgt, anchors = setup.small_texts[i % len(setup.small_texts)]
        with torch.no_grad():
            teacher_anchor = teacher.encoder.embed_tokens(padded(teacher.encoder, anchors))
        src_emb = student.embed_tokens(padded(student, src))
        tgt_emb = student.embed_tokens(padded(student, tgt))
        value = authors_loss(LossInputs.single_process(src_emb, tgt_emb, teacher_anchor)).value
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), config.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()

    step.transformer = student.model
    return step, length


# ---------------------------------------------------------------------------------------------- large
def real_token_fraction(
    setup: Setup, texts: list[tuple[list[str], list[str], list[str]]]
) -> dict[str, float]:
    """Real tokens over padded token positions, plain (one batch per side) and bucketed: the waste cut."""
    import numpy as np

    from imascl_ray.encoder import SentenceEncoder
    from imascl_ray.engine.encode import length_buckets, token_counts

    encoder = SentenceEncoder.from_pretrained(
        setup.prepared.student, prefix=None, max_length=setup.config.model.max_length
    )
    real = plain = bucketed = 0
    for src, tgt, _ in texts:
        sides = [token_counts(encoder, side) for side in (src, tgt)]
        real += sum(int(lengths.sum()) for lengths in sides)
        plain += sum(len(lengths) * int(lengths.max()) for lengths in sides)
        lengths = np.concatenate(sides)
        buckets = length_buckets(lengths, setup.config.scaling.micro_batch_size)
        bucketed += sum(len(bucket) * int(lengths[bucket].max()) for bucket in buckets)
    return {"plain": rounded(real / plain), "bucketed": rounded(real / bucketed)}


def large_phase(setup: Setup, args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """(a') and (c) at ``--large-batch`` pairs, interleaved, on ``--large-layers`` layers of the model."""
    student = truncated_student(setup.prepared.student, args.large_layers, Path(args.work_dir))
    layers = "all" if student == setup.prepared.student else args.large_layers
    log(f"second phase: {args.large_batch} pairs, {layers} layers, {args.large_rounds} rounds")
    large = setup.large_batches
    variants = {
        "soft_bucketed": loop_steps(project_loop(setup, "soft", "bucketed", student), large),
        "soft_padded": loop_steps(project_loop(setup, "soft", "bucketed", student, unpad=False), large),
        "st": sentence_transformers_step(setup, prefix, student, setup.large_texts),
    }
    clock = time.process_time if args.cpu_time else time.perf_counter
    times = interleaved(variants, warmup=1, rounds=args.large_rounds, log=log, clock=clock)
    ratios = {
        "bucketed_over_st": ratio_summary(times, "soft_bucketed", "st"),
        "bucketed_over_padded": ratio_summary(times, "soft_bucketed", "soft_padded"),
    }
    fractions = real_token_fraction(setup, setup.large_texts)
    fractions["dense_layers"] = dense_fractions(variants, args.large_rounds + 1)
    return {
        "global_batch": args.large_batch,
        "layers": layers,
        "steps_timed": {name: len(values) for name, values in times.items()},
        "median_step_s": {name: rounded(median(values), 4) for name, values in times.items()},
        **{name: ratio["median"] for name, ratio in ratios.items()},
        "ratios": ratios,
        "real_token_fraction": fractions,
    }


def dense_fractions(variants: dict[str, Any], index: int) -> dict[str, float]:
    """Per variant, real tokens over the token rows its encoder's linear layers processed in one step.

    Measured (:func:`imascl_ray.unpad.count_dense_tokens`) on one extra, untimed step of each variant
    (the authors' variant counts its student only).
    """
    from imascl_ray.unpad import count_dense_tokens

    fractions = {}
    for name, step in variants.items():
        with count_dense_tokens(step.transformer) as count:
            step(index)
        fractions[name] = rounded(count.fraction)
    return fractions


# ---------------------------------------------------------------------------------------------- main
def paired_median(times: dict[str, list[float]], fast: str, slow: str, every: int = 1) -> float:
    """Median over rounds of ``time(slow) / time(fast)`` (= pairs/s of ``fast`` over ``slow`` at equal
    batches), taken on the rounds where both ran; ``slow`` may have run only every ``every``-th round."""
    fast_times = times[fast][::every] if len(times[slow]) < len(times[fast]) else times[fast]
    count = min(len(fast_times), len(times[slow]))
    return median([s / f for f, s in zip(fast_times[:count], times[slow][:count], strict=True)])


def paired_ratio(times: dict[str, list[float]], fast: str, slow: str, every: int = 1) -> float | None:
    """:func:`paired_median`, rounded; None when either variant did not run."""
    return rounded(paired_median(times, fast, slow, every)) if fast in times and slow in times else None


RATIOS = {  # name: (fast, slow)
    "soft_over_st": ("soft", "st"),
    "bucketed_over_st": ("soft_bucketed", "st"),
    "bucketed_over_padded": ("soft_bucketed", "soft_padded"),
    "bucketed_over_soft": ("soft_bucketed", "soft"),
    "soft_over_hard": ("soft_bucketed", "hard"),
    "soft_over_authors": ("soft_small", "authors"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10 rounds: under 5 minutes on 2 CPU cores")
    mode.add_argument("--smoke", action="store_true", help="tiny random model and corpus (for tests)")
    parser.add_argument("--global-batch", type=int, default=None, help="pairs per step (default 32; smoke 8)")
    parser.add_argument("--authors-batch", type=int, default=None, help="global batch of (d) (4; quick 2)")
    parser.add_argument(
        "--large-batch", type=int, default=None, help="global batch of the second phase (default 256; 0: off)"
    )
    parser.add_argument(
        "--large-layers",
        type=int,
        default=None,
        help="transformer layers in that phase (quick: 2; full: all)",
    )
    parser.add_argument("--large-rounds", type=int, default=None, help="timed rounds of the second phase")
    parser.add_argument(
        "--micro-batch", type=int, default=None, help="texts per micro-batch of (a') (default: the config's)"
    )
    parser.add_argument("--max-length", type=int, default=64, help="max_length of (a)-(c) (the quickstart's)")
    parser.add_argument(
        "--bucketing-only",
        action="store_true",
        help="time only (a), (a'), (a'') and (c), then the second phase (skips (b), (d) and soft_small)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="diagnostic: time steps by the process's CPU time on 1 torch thread (not the headline)",
    )
    parser.add_argument("--unfrozen", action="store_true", help="train the word embeddings (all variants)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds of (a)-(c) (at least 5)")
    parser.add_argument("--authors-every", type=int, default=None, help="(d) runs every k-th round only")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="start no new round after this many seconds of the run (once every variant has 5 rounds)",
    )
    parser.add_argument("--pairs-per-language", type=int, default=300)
    parser.add_argument(
        "--distinct-batches", type=int, default=None, help="batches cycled (default: rounds+1)"
    )
    add_work_dir(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        defaults = {"global_batch": 8, "authors_batch": 4, "rounds": 2, "authors_every": 1}
        defaults |= {"large_batch": 32, "large_layers": 1, "large_rounds": 1}
    elif args.quick:
        defaults = {"global_batch": 32, "authors_batch": 2, "rounds": 10, "authors_every": 2}
        defaults |= {"large_batch": 256, "large_layers": 2, "large_rounds": 5}
    else:
        defaults = {"global_batch": 32, "authors_batch": 4, "rounds": 30, "authors_every": 3}
        defaults |= {"large_batch": 256, "large_rounds": 5}
    fill_defaults(args, defaults)
    if args.distinct_batches is None:  # every round its own batch; the warm-up's is round 0's
        args.distinct_batches = args.rounds + 1
    if args.smoke:
        args.max_length = min(args.max_length, 32)
    elif args.rounds < MIN_ROUNDS * args.authors_every or args.large_rounds < MIN_ROUNDS:
        parser.error(
            f"--rounds must be at least {MIN_ROUNDS} x --authors-every and --large-rounds at least "
            f"{MIN_ROUNDS}: every variant is timed {MIN_ROUNDS} times or more"
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_test_environment()
    import torch

    # The headline: wall time on every core this process has. The diagnostic: CPU time on one thread
    # (then CPU time is the work done, no thread waits in it).
    torch.set_num_threads(1 if args.cpu_time else cores())
    clock = time.process_time if args.cpu_time else time.perf_counter
    started = time.perf_counter()
    load_at_start = load_average()
    setup = build_setup(args)
    if args.micro_batch is not None:
        scaling = replace(setup.config.scaling, micro_batch_size=args.micro_batch)
        setup.config = replace(setup.config, scaling=scaling)
    log("building the variants")
    soft_loop = project_loop(setup, "soft", "plain")
    prefix = soft_loop.student.prefix  # what sentence-transformers' collator must prepend too
    variants = {
        "soft": loop_steps(soft_loop, setup.batches),
        "soft_bucketed": loop_steps(project_loop(setup, "soft", "bucketed"), setup.batches),
        "soft_padded": loop_steps(project_loop(setup, "soft", "bucketed", unpad=False), setup.batches),
        "st": sentence_transformers_step(setup, prefix, setup.prepared.student, setup.texts),
    }
    authors_length = None
    if not args.bucketing_only:
        authors, authors_length = authors_step(setup)
        variants["hard"] = loop_steps(project_loop(setup, "infonce", "bucketed"), setup.batches)
        variants["soft_small"] = loop_steps(soft_loop, setup.small_batches)
        variants["authors"] = authors
    log(f"set up in {time.perf_counter() - started:.1f}s; timing {args.rounds} rounds")
    budget = None if args.budget_s is None else max(1.0, args.budget_s - (time.perf_counter() - started))
    load_before = load_average()
    times = interleaved(
        variants,
        warmup=1,
        rounds=args.rounds,
        repeats={"authors": args.authors_every},
        budget_s=budget,
        min_rounds=1 if args.smoke else MIN_ROUNDS * args.authors_every,
        log=log,
        clock=clock,
    )
    fractions = real_token_fraction(setup, setup.texts)
    fractions["dense_layers"] = dense_fractions(
        {name: step for name, step in variants.items() if name != "authors"}, args.rounds + 1
    )
    del variants, soft_loop
    large = large_phase(setup, args, prefix) if args.large_batch else None
    load_after = load_average()
    batch_of = {"soft_small": args.authors_batch, "authors": args.authors_batch}
    pairs_per_s = {name: batch_of.get(name, args.global_batch) / median(v) for name, v in times.items()}
    # The reported ratios: per-round ratios of variants timed back to back (min / median / max), which
    # the load of a shared machine disturbs far less than ratios of medians taken over different moments
    # (those are reported too).
    ratios = {
        name: ratio_summary(times, fast, slow, args.authors_every if slow == "authors" else 1)
        for name, (fast, slow) in RATIOS.items()
    }

    def of_medians(fast: str, slow: str) -> float | None:
        present = fast in pairs_per_s and slow in pairs_per_s
        return rounded(pairs_per_s[fast] / pairs_per_s[slow]) if present else None

    threads = torch.get_num_threads()
    result: dict[str, Any] = {
        "benchmark": "train_throughput",
        "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
        "model": "tiny-random" if args.smoke else "multilingual-e5-small (offline)",
        "global_batch": args.global_batch,
        "authors_global_batch": args.authors_batch,
        "max_length": args.max_length,
        "authors_max_length": authors_length,
        "frozen_word_embeddings": not args.unfrozen,
        "torch_threads": threads,
        "clock": "diagnostic: process CPU time, 1 torch thread" if args.cpu_time else "wall time, all cores",
        "headline": not args.cpu_time,
        "steps_timed": {name: len(values) for name, values in times.items()},
        "median_step_s": {name: rounded(median(values), 4) for name, values in times.items()},
        "pairs_per_s": {name: rounded(value, 4) for name, value in pairs_per_s.items()},
        **{name: None if ratio is None else ratio["median"] for name, ratio in ratios.items()},
        "ratios": ratios,
        "ratios_of_medians": {name: of_medians(fast, slow) for name, (fast, slow) in RATIOS.items()},
        "soft_over_authors_at_global_batch": of_medians("soft", "authors"),
        "micro_batch_size": setup.config.scaling.micro_batch_size,
        "real_token_fraction": fractions,
        "dense_real_token_fraction": fractions["dense_layers"]["soft_bucketed"],
        "large": large,
        "bucketed_over_st_at_large": large["bucketed_over_st"] if large else None,
        "targets": TARGETS,
        "stability": stability(load_at_start, load_after, threads) | {"load_at_timing_start": load_before},
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    result["targets_met"] = {
        key: None if result[key] is None else result[key] >= target for key, target in TARGETS.items()
    }
    emit(result)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
