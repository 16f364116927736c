"""``imascl-ray corpus``: build, inspect and prepare parallel corpora.

- ``corpus gettext --langs en,fr,ja,ko,ru --out PATH``: the offline corpus from this machine's gettext
  catalogues (Parquet, or TSV/JSONL by extension), with counts per pair;
- ``corpus stats PATH``: pairs per language pair, languages, unique sentences, priority by volume;
- ``corpus prepare IN --pairs en-xx --cap 25000 --validation 5000 --train-out T --validation-out V``:
  choose pairs, cap each pair, split, and drop training pairs found in evaluation sets.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NAME = "corpus"
HELP = "Build (from gettext catalogues), inspect and prepare (pairs, cap, split, decontaminate) corpora."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``gettext``, ``stats`` and ``prepare``."""
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)

    gettext = sub.add_parser("gettext", help="Build a corpus from this machine's gettext .mo catalogues.")
    gettext.add_argument(
        "--langs", default="en,fr,ja,ko,ru", help="languages (ISO 639-1), default %(default)s"
    )
    gettext.add_argument(
        "--pairs",
        default="all",
        help="pair set: all, en-xx, en-xx+fr-xx, or en-fr,en-ja (default %(default)s)",
    )
    gettext.add_argument("--out", required=True, help="output file: .parquet, .tsv or .jsonl")
    gettext.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DIR",
        help="another locale root holding <lang>/LC_MESSAGES/*.mo (repeatable)",
    )
    gettext.add_argument("--no-system", action="store_true", help="skip /usr/share/locale")
    gettext.add_argument(
        "--no-python-packages",
        action="store_true",
        help="skip the locale/ folders of installed Python packages",
    )
    gettext.add_argument(
        "--source",
        default=None,
        metavar="PACKAGES",
        help="only the catalogues inside these installed Python packages, e.g. django,sphinx: an "
        "out-of-domain held-out set (--root, --no-system and --no-python-packages do not apply)",
    )
    gettext.add_argument(
        "--exclude-corpus",
        action="append",
        default=[],
        metavar="FILE|gettext",
        help="with --source: drop pairs sharing a sentence (either side, normalised) with this corpus; "
        "'gettext' is what data.corpus=gettext trains on (repeatable)",
    )
    gettext.add_argument("--min-words", type=int, default=4, help="English words at least (%(default)s)")
    gettext.add_argument("--max-chars", type=int, default=300, help="characters at most (%(default)s)")
    gettext.add_argument(
        "--allow-placeholders", action="store_true", help="keep messages with format placeholders or markup"
    )
    gettext.add_argument("--quiet", action="store_true", help="no progress bar")

    stats = sub.add_parser("stats", help="Pairs per language pair, languages, unique sentences of a corpus.")
    stats.add_argument("path", help="corpus file (.parquet, .tsv, .jsonl)")

    prepare = sub.add_parser("prepare", help="Choose pairs, cap each, split train/validation, decontaminate.")
    prepare.add_argument("path", help="input corpus file")
    prepare.add_argument(
        "--pairs",
        default=None,
        help="pair set such as en-xx or en-fr,en-ja (default: every pair the corpus has)",
    )
    prepare.add_argument("--langs", default=None, help="languages for the pair set (default: the corpus's)")
    prepare.add_argument("--cap", type=int, default=None, help="at most this many pairs per language pair")
    prepare.add_argument(
        "--validation",
        type=_count_or_fraction,
        default=0,
        help="validation pairs per language pair: a count or a fraction (default none)",
    )
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument(
        "--evaluation",
        action="append",
        default=[],
        metavar="FILE",
        help="an evaluation set (corpus file or .txt); training pairs found there are dropped (repeatable)",
    )
    prepare.add_argument(
        "--empty",
        choices=("drop", "error"),
        default="drop",
        help="empty sentences: drop with a count, or stop with an error",
    )
    prepare.add_argument("--train-out", required=True, help="training corpus file to write")
    prepare.add_argument("--validation-out", default=None, help="validation corpus file to write")


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor a fraction") from None


def _print_counts(title: str, counts: dict[str, int]) -> None:
    print(title)
    for name, count in counts.items():
        print(f"  {name}\t{count}")


def run(args: argparse.Namespace) -> int:
    """Run the chosen corpus action."""
    return {"gettext": _gettext, "stats": _stats, "prepare": _prepare}[args.corpus_command](args)


def _gettext(args: argparse.Namespace) -> int:
    from imascl_ray.data.corpus_files import corpus_format, write_corpus
    from imascl_ray.data.gettext_corpus import MessageFilter, build_gettext_corpus
    from imascl_ray.errors import InputError

    corpus_format(args.out)  # fail on a bad extension before reading hundreds of catalogues
    if args.exclude_corpus and not args.source:
        raise InputError("--exclude-corpus: only with --source (an out-of-domain set)")
    message_filter = MessageFilter(
        min_words=args.min_words, max_chars=args.max_chars, allow_placeholders=args.allow_placeholders
    )
    dropped = None
    if args.source:
        from imascl_ray.data.out_of_domain import build_out_of_domain_corpus, training_sentences

        exclude = {source: training_sentences(source, args.langs) for source in args.exclude_corpus}
        packages = [name.strip() for name in args.source.split(",") if name.strip()]
        corpus, report, dropped = build_out_of_domain_corpus(
            packages,
            args.langs,
            args.pairs,
            exclude=exclude,
            message_filter=message_filter,
            progress=not args.quiet,
        )
    else:
        corpus, report = build_gettext_corpus(
            args.langs,
            args.pairs,
            roots=args.root,
            system=not args.no_system,
            python_packages=not args.no_python_packages,
            message_filter=message_filter,
            progress=not args.quiet,
        )
    print(
        f"read {report.catalogues} catalogues; messages per language: "
        + ", ".join(f"{code} {count}" for code, count in sorted(report.messages.items()))
    )
    kept = ", ".join(f"{code} {count}" for code, count in sorted(report.kept.items()))
    rejected = ", ".join(f"{reason} {count}" for reason, count in report.rejected.most_common())
    print(f"kept per language: {kept}; rejected: {rejected}")
    if dropped is not None and args.exclude_corpus:
        print(f"dropped {dropped.dropped} pairs sharing a sentence with {', '.join(args.exclude_corpus)}")
    _print_counts("pairs per language pair:", corpus.pair_counts())
    path = write_corpus(corpus, args.out)
    print(f"wrote {len(corpus)} pairs to {path}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from imascl_ray.data.corpus_files import read_corpus

    corpus = read_corpus(args.path)
    _print_counts(f"{args.path}: {len(corpus)} pairs", corpus.pair_counts())
    print(f"languages by volume (auto priority): {', '.join(corpus.languages())}")
    print(f"unique sentences: {len(corpus.sentences())}")
    if corpus.dropped:
        print("dropped while reading: " + ", ".join(f"{k} {v}" for k, v in corpus.dropped.items()))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from imascl_ray.data.corpus_files import check_writable, corpus_format, read_corpus, write_corpus
    from imascl_ray.data.languages import parse_languages
    from imascl_ray.data.split import (
        cap_per_pair,
        contamination_filter,
        read_evaluation_sentences,
        select_pairs,
        train_validation_split,
    )
    from imascl_ray.errors import InputError

    if args.validation and not args.validation_out:
        raise InputError("--validation-out: needed when --validation is given")
    refuse_overwrites(
        [("the input corpus", args.path), *(("--evaluation", path) for path in args.evaluation)],
        [("--train-out", args.train_out), ("--validation-out", args.validation_out)],
    )
    for output in (args.train_out, args.validation_out):
        if output is not None:
            corpus_format(output)  # a bad extension stops before the corpus is read
    corpus = read_corpus(args.path, empty=args.empty)
    if corpus.dropped:
        print("dropped while reading: " + ", ".join(f"{k} {v}" for k, v in corpus.dropped.items()))
    languages = parse_languages(args.langs, "--langs") if args.langs else None
    if args.pairs is not None:
        corpus = select_pairs(corpus, args.pairs, languages)
    corpus = cap_per_pair(corpus, args.cap, args.seed)
    if args.validation:
        split = train_validation_split(corpus, args.validation, args.seed)
        train, validation = split.train, split.validation
        print(
            f"validation: {len(validation)} pairs; {split.overlap_dropped} training pairs dropped for "
            "sharing a sentence with validation"
        )
    else:
        train, validation = corpus, None
    if args.evaluation:
        sets = {path: read_evaluation_sentences(path) for path in args.evaluation}
        train, report = contamination_filter(train, sets)
        print(report.summary())
    if not len(train):
        steps = "the evaluation filter (--evaluation)" if args.evaluation else "the validation split"
        raise InputError(f"{args.path}: no training pairs left after {steps}; nothing was written")
    check_writable(train, args.train_out)  # neither file is written when one of them cannot be
    if validation is not None:
        check_writable(validation, args.validation_out)
    _print_counts(f"training: {len(train)} pairs", train.pair_counts())
    print(f"wrote {write_corpus(train, args.train_out)}")
    if validation is not None:
        print(f"wrote {write_corpus(validation, args.validation_out)}")
    return 0


def refuse_overwrites(inputs: list[tuple[str, str]], outputs: list[tuple[str, str | None]]) -> None:
    """An error, before anything is read or written, when an output file is an input or another output
    (the same file however spelled: resolved paths, links, hard links): writing it would replace the
    corpus with its own copy, or one split with the other. ``(label, path)`` pairs; None: no output."""
    from imascl_ray.errors import InputError

    taken = list(inputs)
    for label, path in outputs:
        if path is None:
            continue
        for other_label, other in taken:
            if _same_file(path, other):
                why = "replace that input" if (other_label, other) in inputs else "replace the other output"
                raise InputError(
                    f"{label} {path} is the same file as {other_label} {other} ({Path(path).resolve()}): "
                    f"writing it would {why}; choose another output file"
                )
        taken.append((label, path))


def _same_file(first: str, second: str) -> bool:
    if Path(first).resolve() == Path(second).resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): not the same file
        return False
