"""A real parallel corpus from the gettext ``.mo`` catalogues on this machine.

Every localised program ships catalogues that pair each English message (msgid) with its human
translation (msgstr), in ``/usr/share/locale/<lang>/LC_MESSAGES/<domain>.mo`` and in the ``locale/``
folders of some Python packages. OPUS publishes the same kind of data (its GNOME, KDE4 and Ubuntu
corpora). This module:

1. finds the catalogues of the chosen languages (:func:`find_catalogues`);
2. reads them with a small ``.mo`` parser (:func:`read_mo`: both byte orders, message contexts,
   plural forms, the header's charset);
3. cleans keyboard mnemonics (``_Open``, ``開く(_O)``, ``&File``) and keeps a message when it passes
   :class:`MessageFilter` (4+ English words, no format placeholders or markup, no newline, at most
   300 characters, translated);
4. pairs English with each language (``en-xx``) and joins two languages on the English message for the
   other pairs (``fr-ja``, ...), deduplicates on the normalised pair, and records the catalogue (domain)
   names as provenance;
5. caches the result for training runs (:func:`cached_gettext_corpus`) under a key of the catalogues
   read (paths, sizes, modification times) and the filter, so that a package upgrade builds it anew.
"""

from __future__ import annotations

import hashlib
import logging
import re
import site
import struct
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imascl_ray.data.corpus import Corpus
from imascl_ray.data.languages import parse_languages, resolve_pair_set
from imascl_ray.data.split import normalise_text
from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

SYSTEM_LOCALE_ROOT = Path("/usr/share/locale")
MO_MAGIC_LITTLE = 0x950412DE
CONTEXT_SEPARATOR = "\x04"

# printf (%s, %d, %-10.3f, %1$s, %(name)s, %'d, %%), inttypes (%<PRId64>), Qt/KDE (%1), braces ({0},
# {name}, {}), shell variables (${HOME}, $HOME), markup tags (<b>, </span>, <file>).
PLACEHOLDER = re.compile(
    r"%(?:\d+\$)?(?:\([^)]*\))?[-+ #0'I]*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|Z|t)?"
    r"[diouxXeEfFgGaAcCsSpnm%]"
    r"|%<[A-Za-z0-9_]+>|%\d"
    r"|\{[^{}\s]*\}"
    r"|\$\{?[A-Za-z_]\w*\}?"
    r"|</?[A-Za-z][^<>]*>"
)
# Mnemonics: "(_O)" / "(&O)" appended in CJK translations, "_" or "&" before a letter in a word start.
BRACKETED_MNEMONIC = re.compile(r"\s*[(（][_&][A-Za-z0-9][)）]")
INLINE_MNEMONIC = re.compile(r"(?<![\w&_])[_&](?=\w)")


@dataclass(frozen=True)
class Catalogue:
    """One ``.mo`` file: its language, its domain (file stem, e.g. ``coreutils``) and path."""

    language: str
    domain: str
    path: Path


@dataclass
class MessageFilter:
    """Which catalogue messages become training pairs (all thresholds configurable).

    A message pair is kept when: the English side has at least ``min_words`` words; neither side has a
    newline or tab; neither side is longer than ``max_chars``; neither side has a format placeholder or
    markup (unless ``allow_placeholders``); the translation differs from the English (an identical
    msgstr is usually an untranslated copy).
    """

    min_words: int = 4
    max_chars: int = 300
    allow_placeholders: bool = False
    allow_newlines: bool = False
    keep_identical: bool = False

    def reject_reason(self, english: str, translation: str) -> str | None:
        """``None`` if the pair is kept, else the name of the first rule it breaks."""
        if not self.allow_newlines and any(c in text for text in (english, translation) for c in "\n\r\t"):
            return "newline"
        if len(english.split()) < self.min_words:
            return "too few words"
        if len(english) > self.max_chars or len(translation) > self.max_chars:
            return "too long"
        if not self.allow_placeholders and (PLACEHOLDER.search(english) or PLACEHOLDER.search(translation)):
            return "placeholder"
        if not self.keep_identical and normalise_text(english) == normalise_text(translation):
            return "untranslated"
        return None


@dataclass
class GettextReport:
    """What building the corpus saw: catalogues read, messages per language, rejections, pair counts."""

    catalogues: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    pairs: dict[str, int] = field(default_factory=dict)


def read_mo(path: str | Path) -> list[tuple[str, str]]:
    """The ``(msgid, msgstr)`` messages of a ``.mo`` file, decoded with the header's charset.

    Contexts (``ctx\\x04msgid``) are removed; a plural entry gives its singular msgid and first form.
    The header (empty msgid) and untranslated entries are skipped; so is a message whose bytes do not
    decode. A file that is not a ``.mo`` catalogue raises :class:`InputError` naming it.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise InputError(f"{path}: too short to be a .mo catalogue")
    for order in ("<", ">"):
        if struct.unpack(f"{order}I", data[:4])[0] == MO_MAGIC_LITTLE:
            break
    else:
        raise InputError(f"{path}: not a .mo catalogue (bad magic number)")
    revision, count, originals, translations = struct.unpack(f"{order}4I", data[4:20])
    if revision >> 16 > 1:
        raise InputError(f"{path}: unsupported .mo major revision {revision >> 16}")
    raw: list[tuple[bytes, bytes]] = []
    try:
        for index in range(count):
            id_length, id_offset = struct.unpack_from(f"{order}2I", data, originals + 8 * index)
            str_length, str_offset = struct.unpack_from(f"{order}2I", data, translations + 8 * index)
            if id_offset + id_length > len(data) or str_offset + str_length > len(data):
                raise struct.error("string beyond end of file")
            raw.append((data[id_offset : id_offset + id_length], data[str_offset : str_offset + str_length]))
    except struct.error as error:
        raise InputError(f"{path}: corrupt .mo catalogue ({error})") from None

    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            match = re.search(rb"charset=([A-Za-z0-9_.:-]+)", msgstr)
            if match and match.group(1).lower() != b"charset":
                charset = match.group(1).decode("ascii")
            break
    messages = []
    for msgid, msgstr in raw:
        if not msgid or not msgstr:
            continue
        try:
            english = msgid.decode(charset).split("\x00")[0]
            translation = msgstr.decode(charset).split("\x00")[0]
        except (UnicodeDecodeError, LookupError):
            continue
        english = english.rsplit(CONTEXT_SEPARATOR, 1)[-1]
        if english and translation:
            messages.append((english, translation))
    return messages


def clean_mnemonics(text: str) -> str:
    """Remove keyboard mnemonics: ``"_Open File"`` -> ``"Open File"``, ``"開く(_O)"`` -> ``"開く"``."""
    return INLINE_MNEMONIC.sub("", BRACKETED_MNEMONIC.sub("", text)).strip()


def python_locale_roots() -> list[Path]:
    """The ``locale/`` folders of installed Python packages (``sphinx/locale``, ``django/conf/locale``)."""
    packages = {Path(p) for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if p}
    roots: set[Path] = set()
    for folder in packages:
        if folder.is_dir():
            for pattern in ("*/locale", "*/*/locale", "*/*/*/locale"):
                roots.update(path for path in folder.glob(pattern) if path.is_dir())
    return sorted(roots)


def find_catalogues(
    languages: Sequence[str],
    roots: Iterable[str | Path] | None = None,
    *,
    system: bool = True,
    python_packages: bool = True,
) -> list[Catalogue]:
    """Every ``<root>/<lang>/LC_MESSAGES/*.mo`` for the languages, sorted by language then path.

    ``roots`` adds locale roots to ``/usr/share/locale`` (``system``) and the Python packages' ones.
    """
    search: list[Path] = []
    if system:
        search.append(SYSTEM_LOCALE_ROOT)
    if python_packages:
        search.extend(python_locale_roots())
    for root in roots or ():
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"locale root {root}: no such folder")
        search.append(root)
    found = []
    for language in languages:
        for root in dict.fromkeys(search):
            for path in sorted((root / language / "LC_MESSAGES").glob("*.mo")):
                found.append(Catalogue(language, path.stem, path))
    return found


def build_gettext_corpus(
    languages: str | Sequence[str] = ("en", "fr", "ja", "ko", "ru"),
    pairs: str = "all",
    *,
    roots: Iterable[str | Path] | None = None,
    system: bool = True,
    python_packages: bool = True,
    message_filter: MessageFilter | None = None,
    progress: bool = True,
) -> tuple[Corpus, GettextReport]:
    """Build the localisation corpus for ``languages`` and the pair set ``pairs`` (``"all"``, ``"en-xx"``...).

    English is the pivot: ``en-xx`` rows pair msgid and msgstr; ``xx-yy`` rows join two languages'
    translations of the same English message (every combination when a message has several
    translations across catalogues). Rows are deduplicated on the normalised (source, target) pair and
    ordered by pair then source text, so the result is deterministic. Provenance is
    ``gettext:<domain>[,<domain>...]``.
    """
    from tqdm.auto import tqdm

    languages = parse_languages(languages, "langs")
    wanted_pairs = resolve_pair_set(pairs, languages)
    foreign = [code for code in languages if code != "en"]
    message_filter = message_filter or MessageFilter()
    report = GettextReport()
    catalogues = find_catalogues(foreign, roots, system=system, python_packages=python_packages)
    report.catalogues = len(catalogues)
    # language -> English message -> translation -> domains
    table: dict[str, dict[str, dict[str, set[str]]]] = {code: {} for code in foreign}
    for catalogue in tqdm(catalogues, desc="reading catalogues", unit="file", disable=not progress):
        try:
            messages = read_mo(catalogue.path)
        except (InputError, OSError) as error:
            report.unreadable.append(str(error))
            logger.warning("skipping %s: %s", catalogue.path, error)
            continue
        for english, translation in messages:
            report.messages[catalogue.language] += 1
            english, translation = clean_mnemonics(english), clean_mnemonics(translation)
            reason = message_filter.reject_reason(english, translation)
            if reason is not None:
                report.rejected[reason] += 1
                continue
            report.kept[catalogue.language] += 1
            domains = table[catalogue.language].setdefault(english, {}).setdefault(translation, set())
            domains.add(catalogue.domain)

    rows: list[tuple[str, str, str, str, str]] = []
    for src_lang, tgt_lang in wanted_pairs:
        pair_rows = _pair_rows(src_lang, tgt_lang, table)
        report.pairs[f"{src_lang}-{tgt_lang}"] = len(pair_rows)
        rows.extend(pair_rows)
    corpus = Corpus(*(list(column) for column in zip(*rows, strict=True))) if rows else Corpus([], [], [], [])
    return corpus, report


def catalogue_key(catalogues: Sequence[Catalogue], message_filter: MessageFilter) -> str:
    """A short hash of the catalogues (path, size, modification time) and the filter: what the corpus
    is built from. A catalogue added, removed or changed (a package upgrade) gives another key."""
    digest = hashlib.sha256(repr(message_filter).encode())
    for catalogue in catalogues:
        stat = catalogue.path.stat()
        digest.update(
            f"\0{catalogue.language}\0{catalogue.path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
        )
    return digest.hexdigest()[:16]


def cached_gettext_corpus(
    languages: str | Sequence[str],
    cache_dir: str | Path,
    *,
    roots: Iterable[str | Path] | None = None,
    system: bool = True,
    python_packages: bool = True,
) -> Corpus:
    """The gettext corpus of ``languages`` (every pair), built once per set of catalogues.

    The Parquet cache ``gettext-<languages>-<key>.parquet`` is keyed by :func:`catalogue_key`, not by
    the languages alone (a changed catalogue used to keep serving the old corpus), and written
    atomically (a kill mid-write leaves no half file for the next run to read).
    """
    from imascl_ray.data.corpus_files import read_corpus, write_corpus

    languages = parse_languages(languages, "data.languages")
    foreign = [code for code in languages if code != "en"]
    catalogues = find_catalogues(foreign, roots, system=system, python_packages=python_packages)
    key = catalogue_key(catalogues, MessageFilter())
    path = Path(cache_dir) / f"gettext-{'-'.join(languages)}-{key}.parquet"
    if path.is_file():
        logger.info("corpus: reusing %s", path)
        return read_corpus(path)
    corpus, report = build_gettext_corpus(
        languages, "all", roots=roots, system=system, python_packages=python_packages
    )
    logger.info("corpus: %d pairs from %d catalogues, cached in %s", len(corpus), report.catalogues, path)
    write_corpus(corpus, path)
    return corpus


def _translations(
    language: str, english: str, table: dict[str, dict[str, dict[str, set[str]]]]
) -> dict[str, set[str]]:
    """``{text: domains}`` for ``english`` in ``language`` (English itself maps to itself)."""
    if language == "en":
        return {english: set()}
    return table[language].get(english, {})


def _pair_rows(
    src_lang: str, tgt_lang: str, table: dict[str, dict[str, dict[str, set[str]]]]
) -> list[tuple[str, str, str, str, str]]:
    """The deduplicated rows of one language pair, joined on the English message, sorted by source."""
    if src_lang == "en":
        pivots = table[tgt_lang].keys()
    elif tgt_lang == "en":
        pivots = table[src_lang].keys()
    else:
        pivots = table[src_lang].keys() & table[tgt_lang].keys()
    seen: set[tuple[str, str]] = set()
    rows = []
    for english in sorted(pivots):
        for src, src_domains in sorted(_translations(src_lang, english, table).items()):
            for tgt, tgt_domains in sorted(_translations(tgt_lang, english, table).items()):
                key = (normalise_text(src), normalise_text(tgt))
                if key in seen or key[0] == key[1]:
                    continue
                seen.add(key)
                shared = (src_domains & tgt_domains) or (src_domains | tgt_domains)
                rows.append((src_lang, tgt_lang, src, tgt, "gettext:" + ",".join(sorted(shared))))
    rows.sort(key=lambda row: (row[2], row[3]))
    return rows
