"""An out-of-domain held-out set: the gettext catalogues of other software than the training corpus.

The offline training corpus is this machine's system catalogues (``/usr/share/locale``: desktop and
command-line programs). Python packages such as ``django`` and ``sphinx`` ship ``.mo`` catalogues of
their own, written by other translators for other interfaces (web forms, documentation builders). A
model that only memorised the training domain scores worse there; one that learnt to align languages
does not. This module builds that set in the corpus format:

1. :func:`package_locale_roots` finds the ``locale/`` folders inside the named installed packages
   (without importing them);
2. :func:`build_out_of_domain_corpus` reads only those catalogues (same message filter as training) and
   drops every pair whose source or target, normalised, occurs anywhere in the training corpus.

``imascl-ray corpus gettext --source django,sphinx --exclude-corpus gettext --out ood.tsv`` runs it.
The set is built on the user's machine, never shipped as data.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from imascl_ray.data.corpus import Corpus
from imascl_ray.data.gettext_corpus import GettextReport, MessageFilter, build_gettext_corpus
from imascl_ray.data.split import ContaminationReport, contamination_filter
from imascl_ray.errors import InputError

DEFAULT_SOURCES = ("django", "sphinx")
"""Packages whose catalogues make the default out-of-domain set (installed with the ``offline`` extra)."""


def package_locale_roots(packages: Sequence[str]) -> list[Path]:
    """Every folder named ``locale`` inside each named package (``django/conf/locale``, ...), sorted.

    A package that is not installed, or ships no catalogues, is an :class:`InputError` naming it.
    """
    roots: list[Path] = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise InputError(
                f"--source {name}: no installed Python package of that name (pip install {name})"
            )
        found = sorted(
            {
                path
                for folder in spec.submodule_search_locations
                for path in Path(folder).glob("**/locale")
                if path.is_dir()
            }
        )
        if not found:
            raise InputError(f"--source {name}: the package ships no locale/ folder of .mo catalogues")
        roots.extend(found)
    return roots


def training_sentences(source: str, languages: str | Sequence[str]) -> list[str]:
    """The sentences of a training corpus: a corpus file, or ``gettext`` (the system catalogues, which is
    what ``data.corpus=gettext`` trains on)."""
    if source == "gettext":
        corpus, _ = build_gettext_corpus(languages, "all", python_packages=False, progress=False)
        return corpus.sentences()
    from imascl_ray.data.corpus_files import read_corpus

    return read_corpus(source).sentences()


def build_out_of_domain_corpus(
    packages: Sequence[str],
    languages: str | Sequence[str],
    pairs: str,
    *,
    exclude: Mapping[str, Iterable[str]],
    message_filter: MessageFilter | None = None,
    progress: bool = False,
) -> tuple[Corpus, GettextReport, ContaminationReport]:
    """The pairs of the packages' catalogues that share no sentence (either side, normalised) with any
    set of ``exclude`` (``{name: sentences}``, e.g. ``{"gettext": training_sentences("gettext", ...)}``).

    Returns the kept corpus, the catalogue report and what the deduplication dropped.
    """
    corpus, report = build_gettext_corpus(
        languages,
        pairs,
        roots=package_locale_roots(packages),
        system=False,
        python_packages=False,
        message_filter=message_filter,
        progress=progress,
    )
    kept, dropped = contamination_filter(corpus, dict(exclude))
    return kept, report, dropped
