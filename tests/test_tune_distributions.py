"""One param space, three samplers: every distribution of a space file, as Tune's grid, Tune's own
sampler and Optuna (through ``OptunaSearch``'s conversion of the same Tune domains) draw it, stays
inside the declared range, and reaches both ends where tune_spaces/README.md says they are included."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import generate_variants

from imascl_ray.tune.space import load_space

DRAWS = 400

SPACE = """
base: quickstart
search:
  model.max_length: {int: [30, 33]}              # step 1
  schedule.global_batch_size: {int: [16, 64, 16]}  # a grid from a multiple of its step
  schedule.max_steps: {int: [10, 40, 15]}         # a grid that does not start at a multiple: 10, 25, 40
  loss.lam: {uniform: [0.25, 0.75]}
  loss.tau: {loguniform: [0.01, 0.5]}
  model.pooling: {choice: [mean, cls]}
  data.mixed_batches: {grid: [false, true]}
scheduler: {name: fifo}
"""

#: What each key may produce: the exact set for discrete kinds, the closed range for real ones.
EXPECTED = {
    "model.max_length": {30, 31, 32, 33},
    "schedule.global_batch_size": {16, 32, 48, 64},
    "schedule.max_steps": {10, 25, 40},
    "loss.lam": (0.25, 0.75),
    "loss.tau": (0.01, 0.5),
    "model.pooling": {"mean", "cls"},
    "data.mixed_batches": {False, True},
}


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(textwrap.dedent(SPACE).lstrip())
    return load_space(path, ["scaling.num_workers=1"])


def check(key: str, values: list) -> None:
    """Inside the declared range; every discrete value (both ends included) reached."""
    expected = EXPECTED[key]
    if isinstance(expected, set):
        assert set(values) == expected, (key, sorted(set(values), key=str))
        assert all(type(value) is type(next(iter(expected))) for value in values), key
    else:
        low, high = expected
        assert low <= min(values) and max(values) <= high, (key, min(values), max(values))
        # Reaching the ends of a real range means coming close to them: within 2 % of its width
        # (log-width for loguniform) in DRAWS draws.
        scale = np.log if key == "loss.tau" else (lambda x: x)
        width = scale(high) - scale(low)
        assert scale(min(values)) - scale(low) < 0.02 * width, key
        assert scale(high) - scale(max(values)) < 0.02 * width, key


def test_tunes_own_sampler_stays_inside_the_declared_ranges_and_reaches_both_ends(space):
    rng = np.random.default_rng(0)
    for key, domain in space.param_space().items():
        if space.parameters[key].kind == "grid":
            continue
        check(key, [domain.sample(random_state=rng) for _ in range(DRAWS)])


def test_tunes_grid_runs_every_grid_value_and_samples_the_rest_inside_their_ranges(space):
    param_space = space.param_space()
    draws: dict[str, list] = {key: [] for key in param_space}
    for repeat in range(DRAWS // 2):
        for _, config in generate_variants(param_space, random_state=np.random.default_rng(repeat)):
            for key, value in config.items():
                draws[key].append(value)
    assert len(draws["data.mixed_batches"]) == DRAWS  # each repeat runs both grid values once
    for key, values in draws.items():
        check(key, values)


def test_optuna_draws_the_same_ranges_from_optunasearchs_conversion(space):
    param_space = {key: d for key, d in space.param_space().items() if space.parameters[key].kind != "grid"}
    distributions = OptunaSearch.convert_search_space(param_space)
    # Integer keys stay integer distributions where the grid starts at a multiple of its step.
    assert isinstance(distributions["model.max_length"], optuna.distributions.IntDistribution)
    batch = distributions["schedule.global_batch_size"]
    assert (batch.low, batch.high, batch.step) == (16, 64, 16)
    assert distributions["loss.tau"].log and not distributions["loss.lam"].log
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws: dict[str, list] = {key: [] for key in distributions}
    for _ in range(DRAWS):
        trial = study.ask(distributions)
        for key, value in trial.params.items():
            draws[key].append(value)
        study.tell(trial, 0.0)
    for key, values in draws.items():
        check(key, values)


def test_optunasearch_suggests_inside_the_ranges_when_the_tuner_hands_it_the_param_space(space):
    param_space = {key: d for key, d in space.param_space().items() if space.parameters[key].kind != "grid"}
    searcher = OptunaSearch(sampler=optuna.samplers.RandomSampler(seed=1))
    assert searcher.set_search_properties("val/mean/acc", "max", param_space)
    draws: dict[str, list] = {key: [] for key in param_space}
    for index in range(DRAWS):
        for key, value in searcher.suggest(f"trial-{index}").items():
            draws[key].append(value)
    for key, values in draws.items():
        check(key, values)


def test_the_space_accepts_exactly_the_declared_values(space):
    """``contains`` (which checks points_to_evaluate) agrees with what the samplers draw."""
    for key, expected in EXPECTED.items():
        parameter = space.parameters[key]
        if isinstance(expected, set):
            assert all(parameter.contains(value) for value in expected), key
    outside = {"model.max_length": 34, "schedule.global_batch_size": 24, "schedule.max_steps": 15}
    for key, value in outside.items():
        assert not space.parameters[key].contains(value), key
    assert not space.parameters["loss.tau"].contains(0.6)


def test_the_shipped_spaces_have_a_tune_domain_for_every_key():
    root = Path(__file__).resolve().parents[1] / "tune_spaces"
    space = load_space(root / "smoke.yaml")
    assert set(space.param_space()) == set(space.parameters)
