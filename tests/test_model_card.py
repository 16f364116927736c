"""The model card: written from the run's config and results, valid front matter, and kept by
sentence-transformers (the folder still loads, and saving it again, as MLflow does, keeps the card)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from imascl_ray.config import Config
from imascl_ray.encoder import SentenceEncoder
from imascl_ray.model_card import CARD_FILE, loss_names, loss_summary, model_card, write_model_card
from imascl_ray.testing import build_tiny_model

EVALUATION = {
    "en-fr": {
        "accuracy": 0.8125,
        "accuracy_src_to_tgt": 0.8,
        "accuracy_tgt_to_src": 0.825,
        "margin_accuracy": 0.85,
        "xsim_error": 0.15,
        "n": 80,
    },
    "en-ru": {
        "accuracy": 0.6,
        "accuracy_src_to_tgt": 0.55,
        "accuracy_tgt_to_src": 0.65,
        "margin_accuracy": 0.7,
        "xsim_error": 0.3,
        "n": 80,
    },
}


def _config(**loss) -> Config:
    config = Config()
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, **loss))
    data = dataclasses.replace(config.data, pair_set="en-fr+en-ru", languages=["en", "fr", "ru"])
    schedule = dataclasses.replace(config.schedule, global_batch_size=48)
    scaling = dataclasses.replace(config.scaling, num_workers=3)
    return dataclasses.replace(config, data=data, schedule=schedule, scaling=scaling)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---", 2)[1])


def test_card_states_the_runs_loss_pairs_scale_and_scores():
    config = _config(tau=0.07, teacher_tau=0.02, lam=0.3, tms=True)
    card = model_card(
        config,
        name="run-7",
        evaluation=EVALUATION,
        summary={"global_step": 123, "seconds": 90.0},
        best_score=0.7,
        prefix="query: ",
    )
    front = _front_matter(card)
    assert front["library_name"] == "sentence-transformers"
    assert front["pipeline_tag"] == "sentence-similarity"
    assert front["language"] == ["en", "fr", "ru"]
    assert front["base_model"] == "intfloat/multilingual-e5-small"  # what the offline build reproduces
    assert front["license"] == "mit"
    [index] = front["model-index"]
    by_pair = {result["dataset"]["config"]: result["metrics"] for result in index["results"]}
    assert by_pair["en-fr"][0]["value"] == pytest.approx(0.8125)
    assert by_pair["en-ru"][1]["value"] == pytest.approx(0.55)  # src -> tgt
    assert by_pair["en-ru"][2]["value"] == pytest.approx(0.65)  # tgt -> src
    name, labels = loss_names(config.loss)
    assert (name, labels) == ("soft", "priority")  # the default loss: the paper's
    for fact in (
        "`soft`",
        "priority soft labels",
        "tau = 0.07",
        "teacher temperature = 0.02",
        "lambda = 0.3",
        "`en-fr+en-ru`",
        "**Steps**: 123",
        "global batch of 48 pairs on 3 Ray Train worker(s)",
        "| en-fr | 0.812 | 0.800 | 0.825 | 0.850 | 0.150 | 80 |",
        "| en-ru | 0.600 | 0.550 | 0.650 |",
        "0.7000",
        "arXiv:2405.16155",
        "SentenceTransformer(",
        "`query: ` as its default prompt",
    ):
        assert fact in card, fact


def test_loss_names_read_the_config_keys():
    assert loss_names(SimpleNamespace(name="infonce", labels="priority")) == ("infonce", None)
    assert loss_names(SimpleNamespace(name="soft", labels="average")) == ("soft", "average")
    mse = SimpleNamespace(
        name="mse", labels="priority", tau=0.1, teacher_tau=None, tms=True, lam=0.1, margin=0.0
    )
    assert loss_summary(mse).startswith("`mse`") and "tau" not in loss_summary(mse)


def test_card_without_evaluation_or_prefix_says_so():
    card = model_card(_config(), name="r", evaluation=None)
    assert "was not evaluated" in card and "no prefix" in card
    assert "model-index" not in _front_matter(card)


def test_written_card_keeps_the_folder_loadable_and_survives_a_sentence_transformers_save(tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = SentenceEncoder.from_pretrained(str(build_tiny_model(tmp_path / "tiny")), prefix="query: ")
    folder = encoder.save(tmp_path / "runs" / "run-3" / "model")
    path = write_model_card(folder, _config(), evaluation=EVALUATION)
    card = path.read_text(encoding="utf-8")
    assert "# run-3" in card and "`query: ` as its default prompt" in card  # read from the folder
    texts = ["open the file", "ouvrir le fichier"]
    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    np.testing.assert_allclose(model.encode(texts), encoder.encode(texts).numpy(), atol=1e-5)
    model.save(str(tmp_path / "copy"))  # what MLflow's flavour does with the loaded model
    assert (tmp_path / "copy" / CARD_FILE).read_text(encoding="utf-8") == card
