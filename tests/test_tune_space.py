"""Search-space files: parsed into checked parameters, with errors naming the line, before any trial."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from imascl_ray.config import Config, flatten
from imascl_ray.errors import InputError
from imascl_ray.tune.space import (
    NOT_SEARCHABLE,
    SCORE,
    load_space,
    max_concurrent_trials,
)

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based line of the first line containing ``needle`` (so tests do not hard-code numbers)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


MINIMAL = """
base: quickstart
search:
  loss.tau: {loguniform: [0.02, 0.3]}
  optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
  model.pooling: {choice: [mean, cls]}
"""


def test_a_space_becomes_parameters_on_top_of_the_base_recipe(tmp_path):
    path = write(
        tmp_path,
        MINIMAL
        + """
overrides:
  schedule:
    max_steps: 40
  loss.lam: 0.25
num_samples: 5
seed: 3
scheduler:
  grace_period: 10
""",
    )
    space = load_space(path, ["optim.weight_decay=0.01"])
    assert space.algorithm == "optuna" and space.trial_count() == 5 and space.seed == 3
    assert space.describe() == {
        "loss.tau": "loguniform(0.02, 0.3)",
        "optim.lr": "loguniform(1e-05, 0.001)",
        "model.pooling": "choice(mean, cls)",
    }
    # The fixed config: the quickstart recipe, the space's overrides, the command line.
    assert space.fixed.model.name == "offline:multilingual-e5-small"  # from the recipe
    assert space.fixed.schedule.max_steps == 40 and space.fixed.loss.lam == 0.25
    assert space.fixed.optim.weight_decay == 0.01
    assert Path(space.fixed.tracking.output_dir).is_absolute()
    # ASHA defaults: rungs from the first validation to the last step.
    assert space.scheduler.name == "asha" and space.scheduler.max_t == 40
    assert space.scheduler.grace_period == 10 and space.scheduler.time_attr == "step"
    # A trial's config: searched values on top of everything else.
    config = space.trial_config({"loss.tau": 0.05, "optim.lr": 2e-4, "model.pooling": "cls"})
    expected = flatten(space.fixed) | {"loss.tau": 0.05, "optim.lr": 2e-4, "model.pooling": "cls"}
    assert flatten(config) == expected


def test_the_paper_table5_grid_has_eight_runs_and_needs_no_early_stopping():
    space = load_space(SPACES / "paper_table5.yaml")
    assert space.algorithm == "grid" and space.trial_count() == 8
    assert set(space.parameters) == {"loss.labels", "loss.tms", "data.pair_set"}
    assert space.scheduler.name == "fifo"
    assert len(space.data_variants()) == 2  # one teacher cache over both pair sets


@pytest.mark.parametrize("name", ["paper", "paper_table5", "quickstart", "smoke"])
def test_every_shipped_space_loads(name):
    space = load_space(SPACES / f"{name}.yaml")
    assert space.parameters and space.metric == SCORE and space.mode == "max"
    for point in space.points_to_evaluate:
        space.trial_config(
            point | {key: p.args[0] for key, p in space.parameters.items() if key not in point}
        )


def test_the_smoke_space_starts_with_a_good_and_a_bad_point_over_two_pair_sets():
    space = load_space(SPACES / "smoke.yaml")
    assert space.trial_count() == 3 and space.scheduler.name == "asha"
    assert [p["optim.lr"] for p in space.points_to_evaluate] == [5e-3, 1e-6]
    assert sorted(space.data_variants()) == sorted(
        f"{space.parameters['data.pair_set'].where}: data.pair_set={value}"
        for value in ("en-fr", "en-fr+en-ru")
    )
    assert space.trial_resources() == {"CPU": 3.0}  # the trial's own CPU and 2 workers x 1


def test_a_command_line_value_pins_a_searched_key(tmp_path):
    space = load_space(write(tmp_path, MINIMAL), ["model.pooling=cls"])
    assert "model.pooling" not in space.parameters and space.pinned == {"model.pooling": "cls"}
    assert space.fixed.model.pooling == "cls"
    smoke = load_space(SPACES / "smoke.yaml", ["data.pair_set=en-ru"])
    assert smoke.fixed.data.pair_set == "en-ru" and "data.pair_set" not in smoke.parameters
    assert all("data.pair_set" not in point for point in smoke.points_to_evaluate)
    assert len(smoke.data_variants()) == 1
    with pytest.raises(InputError, match=r"command line \(data.pair_set=ko-xx\).*'ko' is not among"):
        load_space(SPACES / "smoke.yaml", ["data.pair_set=ko-xx"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("  loss.taux: {uniform: [0.0, 1.0]}", r"unknown key 'loss.taux' \(did you mean 'loss.tau'\?\)"),
        ("  loss.tau: {unifrom: [0.0, 1.0]}", r"unknown distribution 'unifrom' \(did you mean 'uniform'\?\)"),
        ("  loss.tau: {uniform: [0.5, 0.1]}", r"empty range \[0.5, 0.1\]"),
        ("  loss.tau: {loguniform: [0.0, 0.1]}", "positive low end"),
        ("  loss.tau: {choice: []}", "empty choice"),
        ("  loss.tau: 0.1", "needs a distribution"),
        ("  loss.tau: {uniform: [0.1, 0.2], choice: [0.1]}", "exactly one distribution"),
        ("  loss.tau: {uniform: [-0.5, 0.1]}", r"loss.tau=-0.5: loss.tau must be positive"),
        ("  model.pooling: {choice: [mean, softmax]}", "model.pooling must be one of"),
        ("  data.validation_pair_set: {choice: [en-xx, all]}", "every trial of a sweep is scored on"),
        ("  schedule.max_steps: {uniform: [10, 100]}", "schedule.max_steps must be int"),
        ("  schedule.max_steps: {int: [10, 100, 7]}", "not whole steps of 7"),
        ("  data.pair_set: {choice: [en-xx, en-qq]}", "en-qq"),
        ("  data.pair_set: {choice: [[en-fr, en-ja]]}", "single values"),
        ("  data.max_pairs_per_language_pair: {int: [100, 1000]}", "must be a choice or a grid"),
        (
            "  teacher.max_length: {choice: [32, 64]}",
            "cannot be searched: the trials share one teacher cache",
        ),
        ("  scaling.num_workers: {choice: [1, 2]}", "cannot be searched"),
        ("  tracking.experiment: {choice: [a, b]}", "cannot be searched"),
        ("  loss.tau: {choice: [0.1, 0.1]}", "lists 0.1 twice"),
    ],
)
def test_a_bad_search_entry_is_an_error_naming_its_line(tmp_path, entry, message):
    path = write(
        tmp_path, f"base: quickstart\nsearch:\n  optim.lr: {{loguniform: [1.0e-5, 1.0e-3]}}\n{entry}\n"
    )
    with pytest.raises(InputError, match=message) as caught:
        load_space(path)
    assert str(caught.value).startswith(f"{path}, line 4"), str(caught.value)


@pytest.mark.parametrize(
    ("extra", "needle", "message"),
    [
        ("sheduler: {name: asha}", "sheduler", r"unknown key 'sheduler' \(did you mean 'scheduler'\?\)"),
        ("scheduler: {name: hyperband}", "scheduler", "asha or fifo"),
        (
            "scheduler: {grace_period: 500}",
            "grace_period",
            r"grace_period must be an integer in \[1, max_t=150\]",
        ),
        ("scheduler: {reduction_factor: 1}", "reduction_factor", "must exceed 1"),
        ("scheduler: {max_tt: 3}", "max_tt", "unknown scheduler key 'max_tt'"),
        ("metric: accuracy", "metric", "validation metric"),
        ("mode: maximum", "mode: maximum", "max or min"),
        ("num_samples: 0", "num_samples", "positive integer"),
        ("max_concurrent_trials: lots", "max_concurrent_trials", "'auto' or a positive integer"),
        ("resources: {gpus: 1}", "gpus", "unknown resources key 'gpus'"),
        ("points_to_evaluate:\n  - {loss.tau: 0.9}", "loss.tau: 0.9", r"loss.tau=0.9 is outside loguniform"),
        ("points_to_evaluate:\n  - {loss.lam: 0.9}", "loss.lam: 0.9", "'loss.lam' is not a searched key"),
        ("mode: max\nmode: min", "mode: min", "'mode' appears twice"),
    ],
)
def test_a_bad_setting_is_an_error_naming_its_line(tmp_path, extra, needle, message):
    path = write(tmp_path, MINIMAL + extra + "\n")
    with pytest.raises(InputError, match=message) as caught:
        load_space(path)
    assert f"{path}, line {line_of(path, needle)}" in str(caught.value), str(caught.value)


def test_a_key_both_fixed_and_searched_names_both_lines(tmp_path):
    path = write(tmp_path, MINIMAL + "overrides:\n  loss.tau: 0.2\n")
    searched, fixed = line_of(path, "loss.tau: {"), line_of(path, "loss.tau: 0.2")
    with pytest.raises(
        InputError, match=rf"line {searched}: loss.tau is both searched and fixed \(.*line {fixed}\)"
    ):
        load_space(path)


def test_a_missing_base_recipe_names_its_line(tmp_path):
    path = write(tmp_path, "search:\n  loss.tau: {uniform: [0.05, 0.2]}\nbase: no_such_recipe\n")
    with pytest.raises(InputError, match=r"line 3: base: no_such_recipe: no such config file or recipe"):
        load_space(path)


def test_asha_needs_max_t_when_the_steps_are_not_fixed(tmp_path):
    path = write(tmp_path, "search:\n  loss.tau: {uniform: [0.05, 0.2]}\n")
    with pytest.raises(InputError, match="max_t is needed"):
        load_space(path)  # the defaults train for epochs, not a fixed number of steps
    assert load_space(path, ["schedule.max_steps=30"]).scheduler.max_t == 30


def test_a_space_without_search_or_with_every_key_pinned_is_refused(tmp_path):
    with pytest.raises(InputError, match="no 'search' section"):
        load_space(write(tmp_path, "base: quickstart\n"))
    with pytest.raises(InputError, match="nothing is left to search"):
        load_space(
            write(tmp_path, "base: quickstart\nsearch:\n  loss.tau: {uniform: [0.05, 0.2]}\n"),
            ["loss.tau=0.1"],
        )
    with pytest.raises(InputError, match="no such search-space file"):
        load_space(tmp_path / "missing.yaml")


def test_searching_the_student_needs_a_fixed_teacher(tmp_path):
    text = "base: quickstart\nsearch:\n  model.name: {choice: [a, b]}\n"
    with pytest.raises(InputError, match=r"fixed teacher\.name"):
        load_space(write(tmp_path, text))
    space = load_space(write(tmp_path, text), ["teacher.name=some/teacher"])
    assert space.parameters["model.name"].args == ("a", "b")


def test_the_unsearchable_keys_are_real_config_keys():
    for key in NOT_SEARCHABLE:
        assert key.endswith(".") or key in flatten(Config())


def test_relative_paths_are_anchored_where_the_command_runs(tmp_path, monkeypatch):
    (tmp_path / "corpus.tsv").write_text("src_lang\ttgt_lang\tsrc\ttgt\n")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, MINIMAL)
    space = load_space(path, ["data.corpus=corpus.tsv", "tracking.output_dir=out", "model.name=intfloat/e5"])
    assert space.fixed.data.corpus == str(tmp_path / "corpus.tsv")
    assert space.fixed.tracking.output_dir == str(tmp_path / "out")
    assert space.fixed.model.name == "intfloat/e5"  # not a folder here: a hub id stays as it is


def test_a_relative_mlflow_store_and_storage_path_resolve_where_the_sweep_was_launched(tmp_path, monkeypatch):
    """Tune runs each trial in a folder of its own: a relative sqlite store would give each trial its
    own database, a relative storage path its own checkpoints. Both resolve against the launch folder."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, MINIMAL)
    space = load_space(path, ["tracking.mlflow_uri=sqlite:///x.db", "tracking.storage_path=ray-results"])
    assert space.fixed.tracking.mlflow_uri == f"sqlite:///{tmp_path / 'x.db'}"  # sqlite:////abs/x.db
    assert space.fixed.tracking.storage_path == str(tmp_path / "ray-results")
    elsewhere = tmp_path / "trial-folder"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where a trial runs: its config keeps pointing at the launch folder
    trial = space.trial_config({"loss.tau": 0.1, "optim.lr": 1e-4, "model.pooling": "mean"})
    assert trial.tracking.mlflow_uri == f"sqlite:///{tmp_path / 'x.db'}"
    assert trial.tracking.storage_path == str(tmp_path / "ray-results")
    for uri in ("http://127.0.0.1:5000", "sqlite:////abs/m.db", "file:///abs/mlruns"):
        assert load_space(path, [f"tracking.mlflow_uri={uri}"]).fixed.tracking.mlflow_uri == uri
    remote = load_space(path, ["tracking.storage_path=s3://bucket/prefix"])
    assert remote.fixed.tracking.storage_path == "s3://bucket/prefix"


def test_trials_over_different_pair_sets_are_scored_on_the_union_of_the_searched_sets():
    space = load_space(SPACES / "smoke.yaml")
    assert space.validation_pair_set() == "en-fr,en-ru"
    configs = [space.trial_config(point) for point in space.points_to_evaluate]
    configs.append(space.trial_config({**space.points_to_evaluate[0], "data.pair_set": "en-fr+en-ru"}))
    assert {config.data.pair_set for config in configs} == {"en-fr", "en-fr+en-ru"}
    assert {config.data.validation_pair_set for config in configs} == {"en-fr,en-ru"}
    # The shared teacher cache is built from the same configs (the same split) as the trials'.
    assert {c.data.validation_pair_set for c in space.data_variants().values()} == {"en-fr,en-ru"}
    # Pair sets that are not searched: each run is scored on its own pairs, as a single run is.
    pinned = load_space(SPACES / "smoke.yaml", ["data.pair_set=en-ru"])
    assert pinned.validation_pair_set() is None
    assert pinned.trial_config({"optim.lr": 1e-3, "loss.tau": 0.1}).data.validation_pair_set is None


def test_the_union_covers_named_sets_and_keeps_a_fixed_validation_set(tmp_path):
    text = "base: quickstart\nsearch:\n  data.pair_set: {choice: [en-xx, fr-xx, en-fr]}\n"
    space = load_space(write(tmp_path, text), ["data.languages=[en,fr,ja]"])
    assert space.validation_pair_set() == "en-fr,en-ja,fr-ja"
    fixed = load_space(write(tmp_path, text), ["data.languages=[en,fr,ja]", "data.validation_pair_set=en-ja"])
    assert fixed.validation_pair_set() is None
    assert fixed.trial_config({"data.pair_set": "fr-xx"}).data.validation_pair_set == "en-ja"


@pytest.mark.parametrize(
    ("cluster", "per_trial", "expected"),
    [
        ({"CPU": 3.0}, {"CPU": 3.0}, 1),
        ({"CPU": 16.0}, {"CPU": 3.0}, 5),
        ({"CPU": 64.0, "GPU": 8.0}, {"CPU": 3.0, "GPU": 2.0}, 4),  # GPUs bound it
        ({"CPU": 4.0, "GPU": 8.0}, {"CPU": 3.0, "GPU": 2.0}, 1),  # CPUs bound it
    ],
)
def test_concurrency_follows_the_cluster_resources(cluster, per_trial, expected):
    assert max_concurrent_trials(cluster, per_trial) == expected


def test_a_trial_larger_than_the_cluster_is_an_error_saying_what_it_needs():
    with pytest.raises(InputError, match=r"one trial needs 3 CPU .* the cluster has 2 CPU"):
        max_concurrent_trials({"CPU": 2.0}, {"CPU": 3.0})


def test_the_space_module_does_not_import_ray():
    import subprocess

    code = "import sys, imascl_ray.tune.space, imascl_ray.tune.results; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_score_matches_the_training_loop():
    from imascl_ray.engine.loop import SCORE as LOOP_SCORE

    assert SCORE == LOOP_SCORE
