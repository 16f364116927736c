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
