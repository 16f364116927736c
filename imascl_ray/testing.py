"""A tiny BERT-like model with a locally written vocabulary, for fast tests everywhere.

No hub, no download: :func:`build_tiny_model` writes a complete Hugging Face folder (``config.json``,
``model.safetensors``, a fast WordPiece ``tokenizer.json`` and its config) in well under a second. The
weights are random but seeded, so two builds with the same arguments are identical. The vocabulary
covers ASCII text (letters, digits, punctuation, a few hundred English and French words) and single
CJK, kana, Hangul and Cyrillic characters, so en/fr/ja/ko/ru test sentences give few ``[UNK]`` s.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path

# The settings of ``.ci/env.sh``: no hub; Ray without token auth on a local cluster and with fast health
# checks (so that ``ray.train.report()`` does not cost 2 s a call); MLflow's server without its job runner.
TEST_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def set_test_environment() -> None:
    """Apply :data:`TEST_ENVIRONMENT` to ``os.environ`` where a variable is not set already.

    Call it before anything imports Ray: Ray reads some of these when it is imported.
    """
    for key, value in TEST_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_WORD_LINES = """
the a an of to in and or is are was were be been it this that these those for on with as at by from
not no yes i you he she we they me him her us them my your his our their what which who when where
why how all any some many much more most other one two three four five six seven eight nine ten
cat dog bird fish house car tree water fire book page file open close save delete copy paste print
new old good bad big small long short high low first last next previous time day week year today
hello world thank thanks please sorry name user password error warning message window menu help
settings edit view tools search find replace select cancel ok apply start stop run exit quit
language english french japanese korean russian text sentence word translation model data train test
can cannot could would should will shall may might must do does did done have has had make made
go goes went come came see saw know knew think take give get got use used find found want like
le la les un une des du de et est sont pas ne je tu il elle nous vous ils elles ce cette qui que
bonjour merci oui non fichier ouvrir fermer enregistrer supprimer chat chien maison eau livre monde
avec pour dans sur par aussi tout tous bien mal grand petit nouveau vieux jour nuit
"""
_WORDS = _WORD_LINES.split()

# Single characters of other scripts: common CJK ideographs, kana, Hangul syllables, Cyrillic.
_CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持音"  # noqa: E501
_KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだぢづでどばびぶべぼぱぴぷぺぽっゃゅょアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポッャュョー"  # noqa: E501
_HANGUL = "가나다라마바사아자차카타파하고노도로모보소오조초코토포호구누두루무부수우주추쿠투푸후기니디리미비시이지치키티피히는을를에의은이가도와과한하다있습니다요세계안녕감사합니파일열기저장삭제고양개집물책"  # noqa: E501
_CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_ACCENTED = "àâäçéèêëîïôöùûüÿœæ"


def tiny_vocabulary() -> list[str]:
    """The tiny model's WordPiece vocabulary: special tokens first, then pieces; no duplicates."""
    pieces: list[str] = list(SPECIAL_TOKENS)
    pieces += list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    pieces += ["##" + c for c in string.ascii_lowercase + string.digits]
    pieces += _WORDS
    # BERT's normaliser puts spaces around CJK ideographs only; accented Latin, kana, Hangul and
    # Cyrillic stay glued into words, so they also need their ``##`` continuation forms. Accents are
    # kept (``strip_accents=False``): stripping decomposes Hangul syllables into jamo.
    pieces += list(_CJK)
    for chars in (_ACCENTED, _KANA, _HANGUL, _CYRILLIC):
        pieces += list(chars) + ["##" + c for c in chars]
    seen: set[str] = set()
    return [p for p in pieces if not (p in seen or seen.add(p))]


def build_tiny_model(
    directory: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT (``BertModel`` without pooler) and its fast tokenizer to ``directory``.

    Returns the folder, which ``AutoModel``/``AutoTokenizer``/``SentenceEncoder.from_pretrained`` load
    offline. Same arguments give byte-identical weights (seeded initialisation). ``dropout=0`` makes
    training deterministic across worker counts (for equality tests).
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {piece: index for index, piece in enumerate(tiny_vocabulary())}
    tokenizer = BertTokenizer(
        vocab=vocab, do_lower_case=True, strip_accents=False, model_max_length=max_position_embeddings
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=vocab["[PAD]"],
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def synthetic_parallel_corpus(
    pairs: int,
    *,
    words: int = 5,
    vocabulary: int = 60,
    seed: int = 0,
    pair_names: Sequence[str] = ("en-fr",),
):
    """A small *learnable* corpus for training tests: each "foreign" word is a fixed stand-in.

    English sentences are ``words`` words drawn from the tiny vocabulary's first ``vocabulary`` words;
    each translation replaces every word by its image under a fixed bijection onto ``vocabulary`` other
    words, so nothing is shared at the token level: an untrained encoder retrieves translations at
    about chance, and one trained on the corpus learns the word mapping. Sentences are unique.

    ``pairs`` pairs for each language pair of ``pair_names`` (e.g. ``("en-fr", "en-ru")``); the i-th is
    drawn with seed ``seed + i``, so the groups hold different sentences and word mappings.
    """
    from imascl_ray.data import Corpus

    return Corpus.from_groups(
        {
            name: _synthetic_pairs(pairs, words=words, vocabulary=vocabulary, seed=seed + index)
            for index, name in enumerate(pair_names)
        }
    )


def _synthetic_pairs(pairs: int, *, words: int, vocabulary: int, seed: int) -> tuple[list[str], list[str]]:
    import numpy as np

    if 2 * vocabulary > len(_WORDS):
        raise ValueError(f"vocabulary can be at most {len(_WORDS) // 2}")
    english, foreign = _WORDS[:vocabulary], _WORDS[vocabulary : 2 * vocabulary]
    rng = np.random.default_rng(seed)
    image = dict(zip(english, rng.permutation(foreign), strict=True))
    seen: set[str] = set()
    sources, targets = [], []
    while len(sources) < pairs:
        sentence = [str(w) for w in rng.choice(english, size=words, replace=False)]
        text = " ".join(sentence)
        if text in seen:
            continue
        seen.add(text)
        sources.append(text)
        targets.append(" ".join(image[w] for w in sentence))
    return sources, targets
