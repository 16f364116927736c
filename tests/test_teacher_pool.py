"""The teacher cache built by Ray Data actors on a real local cluster equals the in-process cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imascl_ray.config import load_config
from imascl_ray.data import write_corpus
from imascl_ray.preparation import prepare_run
from imascl_ray.preparation.teacher_pool import RayDataEmbedder
from imascl_ray.teacher import Teacher, TeacherCache, embed_in_process
from imascl_ray.testing import build_tiny_model, synthetic_parallel_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("assets")
    corpus = synthetic_parallel_corpus(120, pair_names=("en-fr", "en-ru"))
    return {
        "model": build_tiny_model(folder / "tiny"),
        "corpus": write_corpus(corpus, folder / "corpus.parquet"),
        "sentences": corpus.sentences(),
    }


def test_two_cpu_actors_build_the_in_process_cache_row_for_row(ray_cluster, assets, tmp_path):
    sentences = assets["sentences"]  # 480 sentences: 8 shards of 64 over 2 actors
    teacher = Teacher.from_pretrained(assets["model"], prefix="query: ", max_length=32)
    local = TeacherCache.build(teacher, sentences, tmp_path / "local", shard_size=64, show_progress=False)
    pool = RayDataEmbedder(2, cpus_per_worker=1, use_gpu=False)
    remote = TeacherCache.build(
        teacher, sentences, tmp_path / "ray", shard_size=64, show_progress=False, embedder=pool
    )
    assert remote.fingerprint == local.fingerprint and remote.directory.name == local.directory.name
    assert remote.embeddings.shape == (len(sentences), 32)
    np.testing.assert_allclose(remote.embeddings, local.embeddings, atol=1e-6, rtol=0)
    assert [p.name for p in (tmp_path / "ray").iterdir()] == [remote.directory.name]


def test_an_interrupted_build_resumes_on_the_actors_with_the_missing_shards_only(
    ray_cluster, assets, tmp_path
):
    sentences = assets["sentences"][:200]  # shards of 64: 0-63, 64-127, 128-191, 192-199
    teacher = Teacher.from_pretrained(assets["model"], max_length=32)

    def killed_after_two(teacher, sentences, shards, batch_size):
        for done, item in enumerate(embed_in_process(teacher, sentences, shards, batch_size)):
            if done == 2:
                raise RuntimeError("killed")
            yield item

    with pytest.raises(RuntimeError, match="killed"):
        TeacherCache.build(teacher, sentences, tmp_path, shard_size=64, embedder=killed_after_two)
    asked = []
    pool = RayDataEmbedder(2, cpus_per_worker=1, use_gpu=False)

    def recording(teacher, sentences, shards, batch_size):
        asked.extend(shard.index for shard in shards)
        return pool(teacher, sentences, shards, batch_size)

    resumed = TeacherCache.build(teacher, sentences, tmp_path, shard_size=64, embedder=recording)
    assert sorted(asked) == [2, 3]
    np.testing.assert_allclose(resumed.embeddings, teacher.encode(sentences).numpy(), atol=1e-6, rtol=0)


def test_teacher_workers_in_the_config_put_the_run_cache_on_the_actors(ray_cluster, assets, tmp_path):
    def config(output: Path, workers: int):
        return load_config(
            None,
            [
                f"model.name={assets['model']}",
                f"data.corpus={assets['corpus']}",
                "data.languages=[en,fr,ru]",
                "data.pair_set=en-fr+en-ru",
                "data.validation_pairs=20",
                "model.max_length=32",
                "teacher.max_length=32",
                "teacher.batch_size=2",  # shards of 128 sentences: 4 over the 2 actors
                f"teacher.workers={workers}",
                "scaling.num_workers=1",
                f"tracking.output_dir={output}",
            ],
        )

    on_actors = prepare_run(config(tmp_path / "actors", 2), tmp_path / "actors" / "run")
    here = prepare_run(config(tmp_path / "here", 0), tmp_path / "here" / "run")
    assert Path(on_actors.teacher_cache).name == Path(here.teacher_cache).name
    assert Path(on_actors.teacher_cache).parent == (tmp_path / "actors" / "cache" / "teacher").resolve()
    np.testing.assert_allclose(
        TeacherCache.open(on_actors.teacher_cache).embeddings,
        TeacherCache.open(here.teacher_cache).embeddings,
        atol=1e-6,
        rtol=0,
    )
