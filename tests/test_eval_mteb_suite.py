"""The paper suite through the real mteb 2.26 task classes, with local data injected (no hub)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from imascl_ray.eval.bitext import bitext_scores
from imascl_ray.eval.hashing_encoder import HashingEncoder
from imascl_ray.eval.mteb_suite import PAPER_SUITE, MtebEncoder, flatten_paper, paper_tasks, run_paper_suite

WORDS = ["red", "blue", "green", "cat", "dog", "house", "tree", "river", "stone", "bird", "sun", "moon"]
N = 24


def sentences(rng: np.random.Generator, tag: str, n: int = N) -> list[str]:
    return [f"{i % 9} {tag} " + " ".join(rng.choice(WORDS, 3)) for i in range(n)]


def inject(tasks, seed: int = 0):
    """Small deterministic data in each task's own layout (subset -> split -> Dataset)."""
    from datasets import Dataset, DatasetDict

    rng = np.random.default_rng(seed)
    for task in tasks:
        name = task.metadata.name
        split = task.eval_splits[0]
        if name == "FloresBitextMining":
            base = sentences(rng, "x")
            task.dataset = {
                split: Dataset.from_dict(
                    {
                        lang: [f"{lang[:2]} {s} {rng.choice(WORDS)}" for s in base]
                        for lang in ("eng_Latn", "fra_Latn", "jpn_Jpan", "kor_Hang", "rus_Cyrl")
                    }
                )
            }
        elif task.metadata.type == "BitextMining":
            task.dataset = {}
            for subset in task.hf_subsets:
                base = sentences(rng, subset[:2])
                task.dataset[subset] = DatasetDict(
                    {
                        split: Dataset.from_dict(
                            {"sentence1": base, "sentence2": [f"en {s} {rng.choice(WORDS)}" for s in base]}
                        )
                    }
                )
        else:
            task.dataset = {
                subset: DatasetDict(
                    {
                        split: Dataset.from_dict(
                            {
                                "sentence1": sentences(rng, "a"),
                                "sentence2": sentences(rng, "b"),
                                "score": rng.uniform(0, 5, N).round(1).tolist(),
                            }
                        )
                    }
                )
                for subset in task.hf_subsets
            }
        task.data_loaded = True
    return tasks


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def suite_run():
    from mteb.cache import ResultCache

    encoder = HashingEncoder(dim=48, seed=1, name="test-org/hashing-a")
    tasks = inject(paper_tasks())
    original = ResultCache.save_to_cache

    def refuse(*args, **kwargs):  # a shared result cache must never be written
        raise AssertionError("mteb result cache used")

    ResultCache.save_to_cache = refuse
    try:
        result = run_paper_suite(
            encoder, name=encoder.name, revision=encoder.revision, tasks=tasks, show_progress=False
        )
    finally:
        ResultCache.save_to_cache = original
    return encoder, tasks, result


def test_suite_covers_the_papers_tasks_and_subsets(suite_run):
    _, _, result = suite_run
    tasks = result["tasks"]
    assert set(tasks["Tatoeba"]) == {"fra-eng", "jpn-eng", "kor-eng", "rus-eng"}
    assert set(tasks["BUCC.v2"]) == {"fr-en", "ru-en"}
    assert set(tasks["FloresBitextMining"]) == {"fra-eng", "jpn-eng", "kor-eng", "rus-eng"}
    assert set(tasks["STSBenchmark.v2"]) == {"en"}
    assert set(tasks["STS17"]) == {"en-en", "ko-ko", "fr-en"}
    assert set(tasks["STS22.v2"]) == {"en", "fr", "ru"}
    assert result["model"] == {
        "name": "test-org/hashing-a",
        "revision": HashingEncoder(dim=48, seed=1).revision,
    }


def test_bitext_numbers_agree_with_mteb_and_with_brute_force(suite_run):
    encoder, tasks, result = suite_run
    tatoeba = next(t for t in tasks if t.metadata.name == "Tatoeba")
    data = tatoeba.dataset["fra-eng"]["test"]
    entry = result["tasks"]["Tatoeba"]["fra-eng"]
    # mteb's own evaluator (sentence1 -> sentence2) on the same embeddings
    assert entry["accuracy_src_to_tgt"] == pytest.approx(entry["mteb_accuracy"])
    assert entry["f1_src_to_tgt"] == pytest.approx(entry["mteb_f1"])
    # brute force on freshly computed embeddings
    sim = unit(encoder.encode(data["sentence1"])) @ unit(encoder.encode(data["sentence2"])).T
    gold = np.arange(N)
    forward, backward = (sim.argmax(1) == gold).mean(), (sim.argmax(0) == gold).mean()
    assert entry["accuracy"] == pytest.approx((forward + backward) / 2)
    assert result["summary"]["languages"]["fr"]["tatoeba"] == pytest.approx(entry["accuracy"])


def test_flores_xsim_is_computed_from_the_embeddings(suite_run):
    encoder, tasks, result = suite_run
    flores = next(t for t in tasks if t.metadata.name == "FloresBitextMining")
    data = flores.dataset["devtest"]
    expected = bitext_scores(encoder.encode(data["kor_Hang"]), encoder.encode(data["eng_Latn"]))
    entry = result["tasks"]["FloresBitextMining"]["kor-eng"]
    assert entry["xsim_error"] == pytest.approx(expected["xsim_error"])
    assert entry["accuracy_src_to_tgt"] == pytest.approx(entry["mteb_accuracy"])
    assert result["summary"]["languages"]["ko"]["flores_xsim"] == pytest.approx(entry["xsim_error"])


def test_sts_spearman_agrees_with_mteb_and_scipy(suite_run):
    encoder, tasks, result = suite_run
    sts17 = next(t for t in tasks if t.metadata.name == "STS17")
    data = sts17.dataset["ko-ko"]["test"]
    cosines = (unit(encoder.encode(data["sentence1"])) * unit(encoder.encode(data["sentence2"]))).sum(1)
    entry = result["tasks"]["STS17"]["ko-ko"]
    assert entry["spearman"] == pytest.approx(spearmanr(cosines, data["score"]).statistic, abs=1e-6)
    assert entry["spearman"] == pytest.approx(entry["mteb_cosine_spearman"], abs=1e-6)
    sts = result["summary"]["sts"]
    expected_en = np.mean(
        [
            result["tasks"]["STSBenchmark.v2"]["en"]["spearman"],
            result["tasks"]["STS17"]["en-en"]["spearman"],
            result["tasks"]["STS22.v2"]["en"]["spearman"],
        ]
    )
    assert sts["en"] == pytest.approx(expected_en)
    assert sts["ja"] is None and result["summary"]["languages"]["ko"]["bucc"] is None


def test_flat_metrics_use_paper_keys(suite_run):
    _, _, result = suite_run
    flat = flatten_paper(result)
    assert flat["tatoeba/fra-eng/acc"] == result["tasks"]["Tatoeba"]["fra-eng"]["accuracy"]
    assert flat["bucc/ru-en/acc"] == result["tasks"]["BUCC.v2"]["ru-en"]["accuracy"]
    assert flat["flores/jpn-eng/xsim"] == result["tasks"]["FloresBitextMining"]["jpn-eng"]["xsim_error"]
    assert flat["sts17/ko-ko/spearman"] == result["tasks"]["STS17"]["ko-ko"]["spearman"]
    assert flat["paper/tatoeba/acc"] == pytest.approx(
        np.mean(
            [result["tasks"]["Tatoeba"][p]["accuracy"] for p in ("fra-eng", "jpn-eng", "kor-eng", "rus-eng")]
        )
    )
    assert all(isinstance(value, float) for value in flat.values())


def test_the_encoder_adapter_speaks_mtebs_protocol_with_a_real_name_and_revision():
    from mteb.models import EncoderProtocol

    adapter = MtebEncoder(HashingEncoder(dim=8), name="my-model", revision="abc123", embedding_dim=8)
    assert isinstance(adapter, EncoderProtocol)
    assert adapter.mteb_model_meta.name == "local/my-model"
    assert adapter.mteb_model_meta.revision == "abc123"
    assert adapter.embed(["x", "y", "x"]).shape == (3, 8)


def test_two_models_on_the_same_tasks_get_their_own_results():
    from mteb import get_task

    def tatoeba():
        return inject([get_task("Tatoeba", hf_subsets=["fra-eng"], eval_splits=["test"])], seed=3)

    suite = [spec for spec in PAPER_SUITE if spec.mteb_name == "Tatoeba"]
    first = run_paper_suite(
        HashingEncoder(dim=8, seed=5),
        name="org/m",
        revision="r1",
        tasks=tatoeba(),
        suite=suite,
        show_progress=False,
    )
    second = run_paper_suite(
        HashingEncoder(dim=64, seed=6),
        name="org/m",
        revision="r2",
        tasks=tatoeba(),
        suite=suite,
        show_progress=False,
    )
    a, b = first["tasks"]["Tatoeba"]["fra-eng"], second["tasks"]["Tatoeba"]["fra-eng"]
    assert (a["mteb_f1"], a["accuracy"]) != (b["mteb_f1"], b["accuracy"])
    assert a["mteb_accuracy"] == pytest.approx(a["accuracy_src_to_tgt"])
    assert b["mteb_accuracy"] == pytest.approx(b["accuracy_src_to_tgt"])
