"""Validation shared over the ranks: every rank encodes a share, the scores equal one process's.

:class:`imascl_ray.distributed.ShardedEncoder` gives each of ``W`` gloo ranks ``1/W`` of the sentences to
encode and all-gathers the embeddings back into input order; :meth:`TrainingLoop.validate` uses it, so a
2-worker run's validation scores must be exactly the scores one process computes alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_bucketing import varied_texts
from test_distributed import WORLD, _init, _run_two_ranks, _teardown

from imascl_ray.distributed import ShardedEncoder
from imascl_ray.testing import build_tiny_model

TEXT_COUNTS = (7, 1)  # uneven shares, and fewer texts than ranks


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    from imascl_ray.config import load_config
    from imascl_ray.data import Corpus, write_corpus
    from imascl_ray.preparation import prepare_run

    folder = tmp_path_factory.mktemp("sharded")
    sources, targets = varied_texts(160, seed=31), varied_texts(160, seed=32)
    corpus = write_corpus(Corpus.from_groups({"en-fr": (sources, targets)}), folder / "corpus.parquet")
    overrides = [
        f"model.name={build_tiny_model(folder / 'tiny')}",
        f"data.corpus={corpus}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        "data.validation_pairs=33",  # odd: the ranks' shares differ by one sentence
        "model.max_length=32",
        "teacher.max_length=32",
        "schedule.global_batch_size=16",
        f"scaling.num_workers={WORLD}",
        f"tracking.output_dir={folder}",
    ]
    prepared = prepare_run(load_config(None, overrides), folder / "run")
    return overrides, prepared


def _validation(overrides: list[str], prepared_dir: str, rank: int = 0, world_size: int = 1):
    from imascl_ray.config import load_config
    from imascl_ray.engine.loop import RankContext, TrainingLoop
    from imascl_ray.preparation import PreparedRun

    loop = TrainingLoop(
        load_config(None, overrides),
        PreparedRun.load(prepared_dir),
        RankContext(rank=rank, world_size=world_size),
        lambda metrics, checkpoint: None,
    )
    texts = {count: varied_texts(count, seed=40 + count) for count in TEXT_COUNTS}
    loop.student.eval()
    embeddings = {count: ShardedEncoder(loop.student).encode(texts[count]) for count in TEXT_COUNTS}
    loop.student.train()
    return loop.validate(), embeddings, loop.student.training


def _sharded_rank(rank: int, init_file: str, out_dir: str) -> None:
    _init(rank, init_file)
    spec = json.loads(Path(out_dir, "spec.json").read_text())
    metrics, embeddings, training = _validation(spec["overrides"], spec["prepared"], rank, WORLD)
    torch.save(
        {"metrics": metrics, "embeddings": embeddings, "training": training}, Path(out_dir, f"rank{rank}.pt")
    )
    _teardown()


def test_two_ranks_validate_on_shares_and_score_as_one_process(prepared_run, tmp_path):
    overrides, prepared = prepared_run
    Path(tmp_path, "spec.json").write_text(
        json.dumps({"overrides": overrides, "prepared": str(prepared.directory)})
    )
    _run_two_ranks(_sharded_rank, tmp_path, timeout=300)
    alone, alone_embeddings, _ = _validation(overrides, str(prepared.directory))
    assert alone["val/mean/acc"] > 0
    for rank in range(WORLD):
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        assert saved["metrics"].keys() == alone.keys()
        for key, value in alone.items():
            assert saved["metrics"][key] == pytest.approx(value, abs=1e-6), (rank, key)
        for count in TEXT_COUNTS:  # every rank holds every embedding, in input order
            assert saved["embeddings"][count].shape == alone_embeddings[count].shape == (count, 32)
            torch.testing.assert_close(saved["embeddings"][count], alone_embeddings[count], rtol=0, atol=1e-5)
        assert saved["training"]  # validation leaves the student in training mode
