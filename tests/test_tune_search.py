"""The sweep's search algorithms, without a cluster: seeded TPE that runs the given points first, and a
grid that enumerates every combination."""

from __future__ import annotations

import itertools
from pathlib import Path

from ray.tune.search.variant_generator import generate_variants

from imascl_ray.tune.space import load_space
from imascl_ray.tune.sweep import _scheduler, _searcher_and_space

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


def suggestions(space, count: int) -> list[dict]:
    searcher, param_space = _searcher_and_space(space)
    assert set(param_space) == set(space.parameters)  # one Tune param space; OptunaSearch converts it
    assert searcher.set_search_properties(space.metric, space.mode, param_space)  # as the Tuner does
    return [searcher.suggest(f"trial-{index}") for index in range(count)]


def test_optuna_runs_the_given_points_first_then_seeded_samples_inside_the_space():
    space = load_space(SPACES / "smoke.yaml")
    first = suggestions(space, 6)
    assert first[:2] == space.points_to_evaluate
    for suggestion in first[2:]:
        assert set(suggestion) == set(space.parameters)
        for key, value in suggestion.items():
            assert space.parameters[key].contains(value), (key, value)
        space.trial_config(suggestion)  # every suggestion is a valid config
    assert suggestions(space, 6) == first  # same seed, same trials
    other_seed = load_space(SPACES / "smoke.yaml")
    other_seed.seed += 1
    assert suggestions(other_seed, 6)[2:] != first[2:]


def test_the_table5_grid_enumerates_every_combination_once():
    space = load_space(SPACES / "paper_table5.yaml")
    _, param_space = _searcher_and_space(space)
    variants = [config for _, config in generate_variants(param_space)]
    combinations = {(v["loss.labels"], v["loss.tms"], v["data.pair_set"]) for v in variants}
    expected = set(itertools.product(["average", "priority"], [False, True], ["all", "en-xx"]))
    assert len(variants) == 8 and combinations == expected


def test_asha_rungs_follow_the_space_and_never_stop_a_trial_at_its_last_step():
    space = load_space(SPACES / "smoke.yaml")
    scheduler = _scheduler(space)
    assert scheduler._time_attr == "step" and scheduler._max_t == 12
    assert sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs) == [4, 8]
    assert scheduler._stop_last_trials is False
    assert type(_scheduler(load_space(SPACES / "paper_table5.yaml"))).__name__ == "FIFOScheduler"
