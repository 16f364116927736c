"""The run configuration: YAML + overrides, errors that name the key and place, lossless round trips."""

from __future__ import annotations

import pytest

from imascl_ray.config import (
    Config,
    dump_yaml,
    field_docs,
    flatten,
    from_dict,
    from_flat,
    load_config,
    to_dict,
)
from imascl_ray.errors import InputError

RECIPE = """\
model:
  name: some/model
  prefix: "query: "
loss:
  labels: average
  tau: 0.05
  tms: false
optim:
  lr: 3e-5
schedule:
  global_batch_size: 16
data:
  languages: [en, fr, ja]
"""


def test_yaml_and_overrides_become_typed_values(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RECIPE)
    config = load_config(
        path, ["loss.tau=0.2", "data.pair_set=all", "model.prefix=null", "optim.betas=[0.9,0.98]"]
    )
    assert config.model.name == "some/model" and config.model.prefix is None
    assert config.loss.labels == "average" and config.loss.tau == 0.2 and config.loss.tms is False
    assert config.optim.lr == pytest.approx(3e-5) and isinstance(config.optim.lr, float)
    assert config.optim.betas == (0.9, 0.98)
    assert config.data.languages == ["en", "fr", "ja"] and config.data.pair_set == "all"
    assert config.schedule.global_batch_size == 16
    assert config.scaling == Config().scaling  # untouched sections keep their defaults


def test_an_unknown_key_names_the_file_line_and_closest_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  name: infonce\n  tua: 0.1\n")
    with pytest.raises(
        InputError, match=r"run\.yaml, line 3: unknown key 'loss\.tua' \(did you mean 'loss\.tau'\?\)"
    ):
        load_config(path)
    with pytest.raises(InputError, match=r"command line \(optim\.learning_rate=1\).*unknown key"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(InputError, match=r"unknown section 'los'.*did you mean 'loss\."):
        load_config(None, ["los.tau=1"])


def test_a_wrong_type_names_the_key_and_the_type(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("schedule:\n  global_batch_size: many\n")
    with pytest.raises(InputError, match=r"line 2: schedule\.global_batch_size must be int, got 'many'"):
        load_config(path)
    with pytest.raises(InputError, match=r"loss\.labels must be one of 'priority'.*got 'hard'"):
        load_config(None, ["loss.labels=hard"])
    with pytest.raises(InputError, match=r"loss\.tms must be bool"):
        load_config(None, ["loss.tms=3"])
    with pytest.raises(InputError, match="not of the form"):
        load_config(None, ["loss.tau"])


def test_cross_field_checks():
    with pytest.raises(
        InputError, match=r"global_batch_size \(30\) must be divisible by scaling\.num_workers \(4\)"
    ):
        load_config(None, ["schedule.global_batch_size=30", "scaling.num_workers=4"])
    with pytest.raises(InputError, match=r"loss\.tau must be positive"):
        load_config(None, ["loss.tau=0"])


def test_round_trips_through_yaml_flat_and_nested_forms(tmp_path):
    config = load_config(None, ["loss.name=infonce", "data.languages=en,ko", "schedule.max_steps=7"])
    assert config.data.languages == ["en", "ko"]
    dump_yaml(config, tmp_path / "back.yaml")
    assert load_config(tmp_path / "back.yaml") == config
    assert from_flat(flatten(config)) == config
    assert from_dict(to_dict(config)) == config
    assert flatten(config)["loss.name"] == "infonce"


def test_field_docs_cover_every_key():
    rows = field_docs()
    assert {key for key, *_ in rows} == set(flatten(Config()))
    assert dict((key, doc) for key, _, _, doc in rows)["optim.lr"].startswith("The authors' code ran 3e-5")


def test_no_validation_pairs_is_refused_when_the_config_is_read():
    """0 validation pairs used to pass and fail at the first validation with KeyError 'val/mean/acc'."""
    with pytest.raises(InputError, match=r"data\.validation_pairs must be at least 1, got 0"):
        load_config(None, ["data.validation_pairs=0"])


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["eval.suite=paper"], "eval.suite=paper"),
        (["eval.pairs=[held_out.tsv]"], "eval.pairs"),
    ],
)
def test_a_trimmed_vocabulary_with_an_evaluation_on_other_texts_is_refused(overrides, named):
    """Texts outside the corpus would become unknown pieces and the reported numbers would be wrong."""
    with pytest.raises(InputError, match=rf"model\.trim_vocabulary=true and {named}:"):
        load_config(None, ["model.trim_vocabulary=true", *overrides])
    assert load_config(None, ["model.trim_vocabulary=true", "eval.suite=local"]).model.trim_vocabulary
    assert load_config(None, overrides).model.trim_vocabulary is False


def test_whole_numbers_and_flags_are_strict_floats_and_strings_are_not():
    """A uniform draw of 10.0 is not a step count, 1 is not a flag; "3e-5" (a YAML 1.1 string) is a float."""
    with pytest.raises(InputError, match=r"schedule\.max_steps must be int \| null, got 10\.0 \(float\)"):
        load_config(None, ["schedule.max_steps=10.0"])
    with pytest.raises(InputError, match=r"schedule\.epochs must be int, got True \(bool\)"):
        load_config(None, ["schedule.epochs=true"])
    with pytest.raises(InputError, match=r"loss\.tms must be bool, got 1 \(int\)"):
        load_config(None, ["loss.tms=1"])
    config = load_config(None, ["optim.lr=3e-5", "tracking.run_name=2024", "optim.betas=0.8,0.9"])
    assert config.optim.lr == pytest.approx(3e-5) and config.tracking.run_name == "2024"
    assert config.optim.betas == (0.8, 0.9)


def test_errors_follow_the_order_the_keys_were_given():
    with pytest.raises(InputError, match=r"\(scaling\.num_workers=x\)"):
        load_config(None, ["scaling.num_workers=x", "model.max_length=y"])
    with pytest.raises(InputError, match=r"\(model\.max_length=y\)"):
        load_config(None, ["model.max_length=y", "scaling.num_workers=x"])


def test_the_descriptions_are_the_docstrings_under_the_fields():
    """One source: the string under each declaration (pydantic's use_attribute_docstrings) is the doc."""
    from imascl_ray.config import ScheduleConfig

    docs = {key: doc for key, _, _, doc in field_docs()}
    assert ScheduleConfig.__pydantic_fields__["max_steps"].description.startswith("Train exactly this many")
    assert docs["schedule.max_steps"] == " ".join(
        ScheduleConfig.__pydantic_fields__["max_steps"].description.split()
    )
    assert docs["tracking.storage_path"].endswith("(None: ``<output_dir>/ray``).")  # two lines, joined


def test_a_retired_key_names_what_replaced_it(monkeypatch):
    from imascl_ray import config as config_module

    monkeypatch.setitem(config_module.RETIRED_KEYS, "loss.old_knob", "loss.tau")
    with pytest.raises(
        InputError, match=r"command line \(loss\.old_knob=1\): loss\.old_knob is gone; use loss\.tau"
    ):
        load_config(None, ["loss.old_knob=1"])
