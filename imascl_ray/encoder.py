"""A sentence encoder on a Hugging Face model: pooling, L2 normalisation, a text prefix, dynamic padding.

The same class serves as student (``encoder(texts)``: a forward pass with gradient) and as teacher
(``encoder.encode(texts)``: batched, no gradient, see :mod:`imascl_ray.teacher`). Every batch is
padded to its own longest text, not to ``max_length`` (the paper's authors padded everything to 512,
which costs most of the compute on short sentences).

``save(directory)`` writes a sentence-transformers folder (Transformer in the root, ``1_Pooling``,
``2_Normalize``, the prefix recorded as the default prompt, weights as ``model.safetensors``) that
``sentence_transformers.SentenceTransformer(directory)`` loads and that gives the same embeddings;
``SentenceEncoder.from_pretrained`` reads such a folder back, its pooling, normalisation and prefix
included.

With ``unpad`` on (the default) the transformer's dense layers see only the real tokens
(:mod:`imascl_ray.unpad`): the same embeddings up to float rounding, without the padding's compute.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imascl_ray.errors import InputError
from imascl_ray.unpad import pool_unpadded, unpadded_hidden, unsupported_reason

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "cls")
MIN_PADDING = 0.1
"""A batch runs unpadded only if at least this share of its positions is padding: below it, the copies in
and out of the padded view cost more than the padding saves (measured on e5-small, CPU: 4 % padding ran
2 % slower unpadded, 17 % padding 14 % faster)."""

# sentence-transformers module types, as sentence-transformers 6.2 writes them to modules.json.
ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
ST_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
ST_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"
PROMPT_NAME = "query"


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """Pool token states ``[n, L, d]`` into sentence vectors ``[n, d]``.

    ``mean``: ``sum_t m_t h_t / sum_t m_t`` over the non-padding tokens (special tokens and the
    prefix included, as sentence-transformers does); ``cls``: the first token's state.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    raise InputError(f"pooling: unknown value {pooling!r}; expected one of {', '.join(POOLINGS)}")


def weights_hash(model: nn.Module) -> str:
    """A content hash (sha256, 20 hex digits) of a model's parameters and buffers, by name.

    Identical weights give the same hash wherever the model lives; any changed value changes it.
    Hashing reads every byte once (about a second for 117M fp32 parameters).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def _read_json(path: Path) -> dict[str, Any] | list[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: line {error.lineno}: not valid JSON ({error.msg})") from error


def read_sentence_transformers_folder(directory: Path) -> dict[str, Any]:
    """What a sentence-transformers folder records: transformer sub-folder, pooling, normalise, prefix.

    Understands the folders sentence-transformers 6 writes and the older layout (``0_Transformer``,
    ``pooling_mode_*_tokens`` flags). Returns an empty dict for a plain Hugging Face folder.
    """
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return {}
    modules = _read_json(modules_path)
    found: dict[str, Any] = {"transformer_path": "", "normalize": False}
    for module in modules:
        kind = str(module.get("type", ""))
        path = str(module.get("path", ""))
        if kind.endswith(".Transformer"):
            found["transformer_path"] = path
        elif kind.endswith(".Pooling"):
            config = _read_json(directory / path / "config.json")
            mode = config.get("pooling_mode")
            if mode is None:  # sentence-transformers < 6: one boolean flag per mode
                flags = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
                mode = next((name for name, flag in flags.items() if config.get(flag)), None)
            if isinstance(mode, list) and len(mode) == 1:
                mode = mode[0]
            if mode not in POOLINGS:
                raise InputError(
                    f"{directory / path / 'config.json'}: pooling {mode!r} is not supported "
                    f"(supported: {', '.join(POOLINGS)})"
                )
            found["pooling"] = mode
        elif kind.endswith(".Normalize"):
            found["normalize"] = True
        else:
            raise InputError(f"{modules_path}: module type {kind!r} is not supported by SentenceEncoder")
    bert_config_path = directory / found["transformer_path"] / "sentence_bert_config.json"
    if bert_config_path.is_file():
        max_seq_length = _read_json(bert_config_path).get("max_seq_length")
        if max_seq_length:
            found["max_length"] = int(max_seq_length)
    st_config_path = directory / "config_sentence_transformers.json"
    if st_config_path.is_file():
        st_config = _read_json(st_config_path)
        prompts = st_config.get("prompts") or {}
        default = st_config.get("default_prompt_name")
        if default:
            found["prefix"] = prompts.get(default, "")
    return found


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder that maps texts to sentence embeddings ``[n, d]``.

    Attributes:
        name: where the model came from (hub id or folder), for logs and fingerprints.
        prefix: text put before every input (``"query: "`` for e5 models, ``""`` for none).
        pooling: ``mean`` or ``cls``.
        normalize: whether embeddings are L2-normalised (then dot product = cosine).
        max_length: longest token sequence fed to the model (longer texts are truncated).
        embedding_dim: ``d``, the model's hidden size.
        unpad: run the dense layers on the real tokens only (:mod:`imascl_ray.unpad`) where the model's
            architecture allows it (BERT family); otherwise, or when False, the padded batch.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        pooling: Pooling = "mean",
        normalize: bool = True,
        prefix: str = "",
        max_length: int = 128,
        unpad: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"pooling: unknown value {pooling!r}; expected one of {', '.join(POOLINGS)}")
        if max_length < 2:
            raise InputError(f"max_length: must be at least 2, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pooling = pooling
        self.normalize = normalize
        self.prefix = prefix
        self.max_length = max_length
        self.unpad = unpad
        self.min_padding = MIN_PADDING
        self._warned_padded = False
        self.train(model.training)  # from_pretrained gives eval mode; keep the model's mode

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        prefix: str | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        unpad: bool = True,
    ) -> SentenceEncoder:
        """Load a hub id, a plain Hugging Face folder or a sentence-transformers folder.

        For a sentence-transformers folder (for example one written by :meth:`save`) its recorded
        pooling, normalisation and prefix are used unless given here; otherwise the defaults are mean
        pooling, normalisation on, no prefix and ``max_length`` 128. ``trust_remote_code`` stays off
        unless asked for. ``unpad``: see the class.
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        name = str(name_or_path)
        local = Path(name)
        recorded = read_sentence_transformers_folder(local) if local.is_dir() else {}
        model_path = str(local / recorded["transformer_path"]) if recorded.get("transformer_path") else name
        pooling = pooling if pooling is not None else recorded.get("pooling", "mean")
        normalize = normalize if normalize is not None else recorded.get("normalize", not recorded)
        prefix = prefix if prefix is not None else recorded.get("prefix", "")

        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        if max_length is None:
            model_max = getattr(tokenizer, "model_max_length", None)
            fallback = model_max if recorded and model_max and model_max < 100_000 else 128
            max_length = recorded.get("max_length", fallback)
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if _accepts_add_pooling_layer(config):
            model_kwargs["add_pooling_layer"] = False  # the pooler is unused; skip its random weights
        model = AutoModel.from_pretrained(model_path, config=config, **model_kwargs)
        return cls(
            model,
            tokenizer,
            name=name,
            pooling=pooling,
            normalize=normalize,
            prefix=prefix,
            max_length=int(max_length),
            unpad=unpad,
        )

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        """``d``: the size of one sentence embedding (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def revision(self) -> str:
        """A content hash of the current weights (see :func:`weights_hash`); changes when they do."""
        return weights_hash(self.model)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live; inputs are moved there."""
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ forward
    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids and attention mask of ``prefix + text``, padded to the batch's longest text."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        batch = self.tokenizer(
            [self.prefix + text for text in texts],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            key: value
            for key, value in batch.items()
            if key in ("input_ids", "attention_mask", "token_type_ids")
        }

    def embed_tokens(self, features: dict[str, Tensor]) -> Tensor:
        """Pooled (and optionally normalised) embeddings ``[n, d]`` of already tokenised inputs."""
        device = self.device
        features = {key: value.to(device) for key, value in features.items()}
        if self.unpadded(features["attention_mask"]):
            hidden, unpadding = unpadded_hidden(self.model, features)
            embeddings = pool_unpadded(hidden, unpadding, self.pooling)
        else:
            hidden = self.model(**features).last_hidden_state
            embeddings = pool(hidden, features["attention_mask"], self.pooling)
        return F.normalize(embeddings, p=2, dim=-1) if self.normalize else embeddings

    def unpadded(self, attention_mask: Tensor) -> bool:
        """Whether :meth:`embed_tokens` runs this batch unpadded: ``unpad`` on, a BERT-family model
        (:func:`imascl_ray.unpad.unsupported_reason`; else a warning, once), no empty row, and at least
        ``min_padding`` (:data:`MIN_PADDING`) of the batch's positions padding. Both paths give the same
        embeddings up to float rounding, so the choice is one of speed only."""
        if not self.unpad:
            return False
        reason = unsupported_reason(self.model)
        if reason is not None:
            if not self._warned_padded:
                logger.warning("%s: running padded, not unpadded: %s", self.name, reason)
                self._warned_padded = True
            return False
        if attention_mask.shape[0] == 0:
            return False
        lengths = attention_mask.sum(dim=1)
        padding = 1 - float(lengths.sum()) / attention_mask.numel()
        return bool(lengths.min() > 0) and padding >= self.min_padding

    def forward(self, texts: Sequence[str]) -> Tensor:
        """Embeddings ``[n, d]`` with gradient (training mode follows ``self.training``)."""
        if len(texts) == 0:
            return torch.zeros(0, self.embedding_dim, device=self.device)
        return self.embed_tokens(self.tokenize(texts))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> Tensor:
        """Embeddings ``[n, d]`` as float32 on the CPU, without gradient, in the order of ``texts``.

        Runs in eval mode (no dropout) and restores the previous mode. Texts are sorted by length
        (longest first) so that each batch pads little, then put back in input order.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if batch_size < 1:
            raise InputError(f"batch_size: must be at least 1, got {batch_size}")
        texts = list(texts)
        out = torch.empty(len(texts), self.embedding_dim, dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode {Path(self.name).name}", unit="batch")
        was_training = self.training
        self.eval()
        try:
            for start in starts:
                chunk = order[start : start + batch_size]
                embeddings = self.forward([texts[i] for i in chunk])
                out[torch.tensor(chunk, dtype=torch.long)] = embeddings.float().cpu()
        finally:
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ CPU speed
    def freeze_word_embeddings(self) -> int:
        """Stop training the word-embedding table (most of a multilingual model's parameters).

        Returns the number of parameters frozen. Position and token-type embeddings stay trainable.
        """
        table = self.model.get_input_embeddings()
        table.weight.requires_grad_(False)
        return table.weight.numel()

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> Path:
        """Write a sentence-transformers folder that ``SentenceTransformer(directory)`` loads.

        Layout: the Hugging Face model (``config.json``, ``model.safetensors``) and tokenizer in the
        root (the Transformer module), ``1_Pooling/config.json``, ``2_Normalize`` when normalising,
        ``modules.json``, ``sentence_bert_config.json`` and ``config_sentence_transformers.json`` with
        the prefix as the default prompt (``query``).
        """
        import sentence_transformers
        import transformers

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(directory)

        modules = [
            {"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING},
        ]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
        _write_json(directory / "modules.json", modules)
        _write_json(
            directory / "sentence_bert_config.json",
            {
                "transformer_task": "feature-extraction",
                "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                "module_output_name": "token_embeddings",
                "max_seq_length": self.max_length,
                "do_lower_case": False,
            },
        )
        (directory / "1_Pooling").mkdir(exist_ok=True)
        _write_json(
            directory / "1_Pooling" / "config.json",
            {
                "embedding_dimension": self.embedding_dim,
                "pooling_mode": self.pooling,
                "include_prompt": True,
            },
        )
        if self.normalize:
            (directory / "2_Normalize").mkdir(exist_ok=True)
            _write_json(directory / "2_Normalize" / "config.json", {})
        _write_json(
            directory / "config_sentence_transformers.json",
            {
                "model_type": "SentenceTransformer",
                "__version__": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "transformers": transformers.__version__,
                    "pytorch": torch.__version__,
                },
                "prompts": {PROMPT_NAME: self.prefix, "document": ""},
                "default_prompt_name": PROMPT_NAME if self.prefix else None,
                "similarity_fn_name": "cosine" if self.normalize else "dot",
            },
        )
        return directory


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _accepts_add_pooling_layer(config: Any) -> bool:
    """Whether the model class ``AutoModel`` picks for ``config`` takes ``add_pooling_layer``."""
    from transformers import AutoModel

    try:
        model_class = AutoModel._model_mapping[type(config)]
    except (KeyError, AttributeError):
        return False
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
