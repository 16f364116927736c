"""Language codes, language-pair sets by name, and language priority (which side is the anchor).

Codes are ISO 639-1 two-letter codes (``en``, ``fr``, ``ja``, ...). A language pair is named
``src-tgt`` (``en-fr``). Pair sets follow the paper's settings:

- a single pair (``en-ko``): the "cross-lingual" setting;
- ``en-xx``: English with every other chosen language;
- ``all``: every pair of the chosen languages (the "multi-lingual" setting, non-English pairs included);
- ``en-xx+fr-xx``, ``en-xx+ru-xx``: unions of ``<lang>-xx`` sets (the paper's Table 6);
- an explicit list ``en-fr,en-ja``.

Priority orders languages; the anchor of a pair is its higher-priority language (the paper's Priority
label encodes the anchor side with the teacher). ``auto`` orders by corpus volume, as the paper does
(en, ru, ja, fr, ko on OPUS).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations

from imascl_ray.errors import InputError

# ISO 639-1 codes (all 184 of them), so that a typo such as "jp" or "eng" is caught.
_ISO_639_1_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da
    de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id
    ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv
    mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn
    ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw
    ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""
ISO_639_1 = frozenset(_ISO_639_1_CODES.split())

#: The paper's five languages in its priority order (by OPUS volume).
PAPER_LANGUAGES = ("en", "ru", "ja", "fr", "ko")

SRC = "src"
TGT = "tgt"


def check_language(code: str, where: str) -> str:
    """Return ``code`` lower-cased and stripped if it is an ISO 639-1 code, else raise naming ``where``.

    ``where`` is the place the code came from (``"corpus.tsv line 12, field src_lang"``).
    """
    normalised = str(code).strip().lower()
    if normalised not in ISO_639_1:
        hint = " (Japanese is 'ja')" if normalised == "jp" else ""
        raise InputError(
            f"{where}: unknown language code {code!r}; expected an ISO 639-1 code such as "
            f"en, fr, ja, ko, ru{hint}"
        )
    return normalised


def pair_name(src_lang: str, tgt_lang: str) -> str:
    """The name of a language pair: ``"en-fr"``."""
    return f"{src_lang}-{tgt_lang}"


def split_pair(name: str, where: str = "language pair") -> tuple[str, str]:
    """``"en-fr"`` -> ``("en", "fr")``, checking both codes."""
    parts = name.strip().split("-")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"{where}: {name!r} is not a language pair like 'en-fr'")
    src = check_language(parts[0], where)
    tgt = check_language(parts[1], where)
    if src == tgt:
        raise InputError(f"{where}: {name!r} pairs a language with itself")
    return src, tgt


def parse_languages(spec: str | Sequence[str], where: str = "languages") -> list[str]:
    """``"en,fr,ja"`` (or a list) -> checked codes, order kept, duplicates removed."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    codes: list[str] = []
    for item in items:
        if str(item).strip():
            code = check_language(item, where)
            if code not in codes:
                codes.append(code)
    if not codes:
        raise InputError(f"{where}: no language given")
    return codes


def resolve_pair_set(spec: str, languages: Sequence[str]) -> list[tuple[str, str]]:
    """The language pairs a pair-set name stands for, over the chosen ``languages`` (order kept).

    Pairs are oriented by the order of ``languages``: with ``en,fr,ja``, ``all`` gives en-fr, en-ja,
    fr-ja. ``<lang>-xx`` puts ``<lang>`` first. Explicit pairs are kept as written.
    """
    languages = parse_languages(languages)
    spec = spec.strip()
    if not spec:
        raise InputError("pairs: empty language-pair set")
    if spec == "all":
        return list(combinations(languages, 2))
    pairs: list[tuple[str, str]] = []

    def add(pair: tuple[str, str]) -> None:
        if pair not in pairs and (pair[1], pair[0]) not in pairs:
            pairs.append(pair)

    for part in spec.replace("+", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if part.endswith("-xx"):
            pivot = check_language(part[:-3], f"pairs {spec!r}")
            if pivot not in languages:
                raise InputError(
                    f"pairs {spec!r}: {pivot!r} is not among the chosen languages {','.join(languages)}"
                )
            for other in languages:
                if other != pivot:
                    add((pivot, other))
        else:
            add(split_pair(part, f"pairs {spec!r}"))
    if not pairs:
        raise InputError(f"pairs {spec!r}: names no language pair")
    return pairs


def volume_priority(languages: Iterable[str]) -> list[str]:
    """Languages ordered by how often they occur (most first; ties by code), the paper's ``auto``."""
    counts = Counter(languages)
    return sorted(counts, key=lambda code: (-counts[code], code))


def resolve_priority(
    spec: str | Sequence[str] | None, src_langs: Iterable[str], tgt_langs: Iterable[str]
) -> list[str]:
    """A priority order from ``"auto"``/``None`` (corpus volume) or an explicit ``"en,ru,ja,fr,ko"``.

    Languages of the corpus missing from an explicit order come after it, by volume.
    """
    by_volume = volume_priority([*src_langs, *tgt_langs])
    if spec is None or (isinstance(spec, str) and spec.strip() in {"", "auto"}):
        return by_volume
    explicit = parse_languages(spec, "priority")
    return explicit + [code for code in by_volume if code not in explicit]


def anchor_side(src_lang: str, tgt_lang: str, priority: Sequence[str]) -> str:
    """``"src"`` if the source language has the higher priority (comes first), else ``"tgt"``.

    A language missing from ``priority`` ranks after every listed one; two missing ones fall back to
    the source side, so the answer is always defined.
    """
    rank = {code: position for position, code in enumerate(priority)}
    missing = len(rank)
    return SRC if rank.get(src_lang, missing) <= rank.get(tgt_lang, missing) else TGT
