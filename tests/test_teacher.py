"""The frozen teacher and its memory-mapped embedding cache (fingerprint, reuse, rebuild, atomicity)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imascl_ray.encoder import SentenceEncoder
from imascl_ray.errors import InputError
from imascl_ray.losses import soft_labels
from imascl_ray.teacher import Teacher, TeacherCache, embed_in_process
from imascl_ray.testing import build_tiny_model

WORDS = [
    "the",
    "cat",
    "dog",
    "house",
    "open",
    "close",
    "file",
    "save",
    "window",
    "menu",
    "help",
    "le",
    "chat",
    "maison",
    "fichier",
    "monde",
]


def make_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        found[" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))] = None
    return list(found)


SENTENCES = [*make_sentences(40), "今日は世界", "안녕하세요 세계", "Привет мир"]


def reference_soft_labels(anchor: torch.Tensor, other: torch.Tensor, kind: str, tau: float) -> torch.Tensor:
    """Eq. 4 (priority) and Eq. 5 (average) of the paper, written out independently."""
    a = F.normalize(anchor, dim=1)
    if kind == "priority":
        return torch.softmax(a @ a.T / tau, dim=1)
    b = F.normalize(other, dim=1)
    return torch.softmax((a @ a.T + b @ b.T) / (2 * tau), dim=1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def teacher(tiny_dir):
    return Teacher.from_pretrained(tiny_dir, prefix="query: ")


def test_teacher_is_frozen(teacher):
    encoder = teacher.encoder
    assert not encoder.training and not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    out = teacher(SENTENCES[:4])
    assert not out.requires_grad and out.dtype == torch.float32
    torch.testing.assert_close(out, encoder.encode(SENTENCES[:4]))


def test_cache_rows_equal_live_teacher_embeddings_and_labels(tmp_path, teacher):
    cache = TeacherCache.build(teacher, SENTENCES, tmp_path, batch_size=4, show_progress=False)
    assert not cache.reused and len(cache) == len(SENTENCES) and cache.embedding_dim == 32
    assert isinstance(cache.embeddings, np.memmap)
    rng = np.random.default_rng(0)
    src, tgt = rng.choice(len(SENTENCES), 8, replace=False), rng.choice(len(SENTENCES), 8, replace=False)
    live_src = teacher([SENTENCES[i] for i in src])  # a live forward on this batch alone
    live_tgt = teacher([SENTENCES[i] for i in tgt])
    cached_src, cached_tgt = cache.lookup(torch.from_numpy(src)), cache.lookup(tgt.tolist())
    torch.testing.assert_close(cached_src, live_src, atol=1e-6, rtol=1e-5)
    for kind in ("priority", "average"):
        # The project's labels from the cache are those of the live teacher, and both are the paper's
        # equations as written out above (never the reference against itself).
        from_cache = soft_labels(cached_src, cached_tgt, kind=kind, tau=0.1)
        torch.testing.assert_close(
            from_cache, soft_labels(live_src, live_tgt, kind=kind, tau=0.1), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            from_cache, reference_soft_labels(live_src, live_tgt, kind, 0.1), atol=1e-5, rtol=1e-5
        )


def test_float16_cache_is_close_to_the_teacher(tmp_path, teacher):
    cache = TeacherCache.build(teacher, SENTENCES, tmp_path, dtype="float16", show_progress=False)
    assert cache.embeddings.dtype == np.float16
    looked_up = cache.lookup(range(len(SENTENCES)))
    assert looked_up.dtype == torch.float32
    torch.testing.assert_close(looked_up, teacher(SENTENCES), atol=2e-3, rtol=2e-3)
    float32 = TeacherCache.build(teacher, SENTENCES, tmp_path, show_progress=False)
    assert cache.fingerprint != float32.fingerprint


def test_same_fingerprint_reuses_the_cache_without_encoding(tmp_path, tiny_dir, monkeypatch):
    first_teacher = Teacher.from_pretrained(tiny_dir)
    first = TeacherCache.build(first_teacher, SENTENCES, tmp_path, show_progress=False)
    # A fresh teacher from the same files (as in a second run or Tune trial) must not encode again.
    again = Teacher.from_pretrained(tiny_dir)

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(again, "encode", refuse)
    second = TeacherCache.build(again, SENTENCES, tmp_path, show_progress=False)
    assert second.reused and second.directory == first.directory
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    # The teacher that built the cache (its tokenizer has been called since) also finds it again.
    assert TeacherCache.build(first_teacher, SENTENCES, tmp_path, show_progress=False).reused
    assert [p.name for p in tmp_path.iterdir()] == [first.directory.name]


def test_changed_corpus_or_teacher_builds_a_new_cache(tmp_path, tiny_dir):
    base = TeacherCache.build(Teacher.from_pretrained(tiny_dir), SENTENCES, tmp_path, show_progress=False)
    edited = [*SENTENCES[:-1], SENTENCES[-1] + "!"]
    reordered = SENTENCES[::-1]
    variants = [
        (Teacher.from_pretrained(tiny_dir), edited),
        (Teacher.from_pretrained(tiny_dir), reordered),
        (Teacher.from_pretrained(tiny_dir, prefix="query: "), SENTENCES),
        (Teacher.from_pretrained(tiny_dir, pooling="cls"), SENTENCES),
        (Teacher.from_pretrained(tiny_dir, max_length=16), SENTENCES),
        (Teacher.from_pretrained(tiny_dir, normalize=False), SENTENCES),
    ]
    changed_weights = SentenceEncoder.from_pretrained(tiny_dir)
    with torch.no_grad():
        changed_weights.model.embeddings.LayerNorm.bias[0] += 0.01
    variants.append((Teacher(changed_weights), SENTENCES))
    fingerprints = {base.fingerprint}
    for teacher, sentences in variants:
        cache = TeacherCache.build(teacher, sentences, tmp_path, show_progress=False)
        assert not cache.reused
        expected = teacher(sentences)
        torch.testing.assert_close(cache.lookup(range(len(sentences))), expected, atol=1e-6, rtol=1e-5)
        fingerprints.add(cache.fingerprint)
    assert len(fingerprints) == len(variants) + 1


def test_a_crash_while_embedding_leaves_no_cache_behind(tmp_path, teacher, monkeypatch):
    calls = {"n": 0}
    real_encode = teacher.encode

    def crash_on_second_chunk(texts, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(teacher, "encode", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        TeacherCache.build(teacher, SENTENCES, tmp_path, batch_size=2, show_progress=False)
    assert calls["n"] == 2  # 43 sentences in chunks of 32: the crash came after rows were written
    assert not list(tmp_path.glob("teacher-*"))  # no cache under a valid name
    assert not list(tmp_path.glob(".teacher-*.shards/0*.npy"))  # the one shard was never finished
    monkeypatch.undo()
    cache = TeacherCache.build(teacher, SENTENCES, tmp_path, batch_size=2, show_progress=False)
    assert not cache.reused
    torch.testing.assert_close(cache.lookup(range(len(SENTENCES))), teacher(SENTENCES), atol=1e-6, rtol=1e-5)


def test_a_damaged_cache_is_refused_by_open_and_rebuilt_by_build(tmp_path, teacher):
    cache = TeacherCache.build(teacher, SENTENCES, tmp_path, show_progress=False)
    expected = np.array(cache.embeddings)
    np.save(cache.directory / "embeddings.npy", np.zeros((3, 32), dtype=np.float32))
    with pytest.raises(InputError, match="damaged teacher cache"):
        TeacherCache.open(cache.directory)
    rebuilt = TeacherCache.build(teacher, SENTENCES, tmp_path, show_progress=False)
    assert not rebuilt.reused
    np.testing.assert_array_equal(np.asarray(rebuilt.embeddings), expected)


def test_lookup_rejects_out_of_range_indices(tmp_path, teacher):
    cache = TeacherCache.build(teacher, SENTENCES[:5], tmp_path, show_progress=False)
    with pytest.raises(IndexError):
        cache.lookup([0, 5])
    assert cache.lookup([]).shape == (0, 32)


def test_an_interrupted_build_resumes_from_its_finished_shards(tmp_path, teacher):
    """43 sentences in shards of 8: a build killed after 3 shards embeds only the other 3 when rerun."""

    def killed_after_three(teacher, sentences, shards, batch_size):
        for done, item in enumerate(embed_in_process(teacher, sentences, shards, batch_size)):
            if done == 3:
                raise RuntimeError("killed")
            yield item

    with pytest.raises(RuntimeError, match="killed"):
        TeacherCache.build(teacher, SENTENCES, tmp_path, shard_size=8, embedder=killed_after_three)
    assert not list(tmp_path.glob("teacher-*"))
    assert len(list(tmp_path.glob(".teacher-*.shards/0*.npy"))) == 3

    asked = []

    def recording(teacher, sentences, shards, batch_size):
        asked.extend(shard.index for shard in shards)
        return embed_in_process(teacher, sentences, shards, batch_size)

    cache = TeacherCache.build(teacher, SENTENCES, tmp_path, shard_size=8, embedder=recording)
    assert asked == [3, 4, 5]
    assert [p.name for p in tmp_path.iterdir()] == [cache.directory.name]  # shards cleaned up
    whole = TeacherCache.build(teacher, SENTENCES, tmp_path / "whole", shard_size=8, show_progress=False)
    assert whole.fingerprint == cache.fingerprint
    np.testing.assert_array_equal(cache.embeddings, whole.embeddings)
    torch.testing.assert_close(cache.lookup(range(len(SENTENCES))), teacher(SENTENCES), atol=1e-6, rtol=1e-5)


def test_the_fingerprint_covers_the_model_config_and_the_library_versions(tmp_path, tiny_dir, monkeypatch):
    """Same weights and tokenizer, another ``layer_norm_eps`` (or torch / transformers): a new cache."""
    base = TeacherCache.build(Teacher.from_pretrained(tiny_dir), SENTENCES, tmp_path, show_progress=False)
    edited_dir = tmp_path / "edited-model"
    shutil.copytree(tiny_dir, edited_dir)
    config = json.loads((edited_dir / "config.json").read_text())
    config["layer_norm_eps"] = 1e-3
    (edited_dir / "config.json").write_text(json.dumps(config))
    edited = Teacher.from_pretrained(edited_dir)
    assert edited.encoder.revision == Teacher.from_pretrained(tiny_dir).encoder.revision  # same weights
    rebuilt = TeacherCache.build(edited, SENTENCES, tmp_path, show_progress=False)
    assert not rebuilt.reused and rebuilt.fingerprint != base.fingerprint
    torch.testing.assert_close(rebuilt.lookup(range(len(SENTENCES))), edited(SENTENCES), atol=1e-6, rtol=1e-5)

    import transformers

    fingerprints = {base.fingerprint, rebuilt.fingerprint}
    for module in (torch, transformers):
        with monkeypatch.context() as patch:
            patch.setattr(module, "__version__", "0.0.1")
            cache = TeacherCache.build(
                Teacher.from_pretrained(tiny_dir), SENTENCES, tmp_path, show_progress=False
            )
        assert not cache.reused
        fingerprints.add(cache.fingerprint)
    assert len(fingerprints) == 4
    assert TeacherCache.build(
        Teacher.from_pretrained(tiny_dir), SENTENCES, tmp_path, show_progress=False
    ).reused
