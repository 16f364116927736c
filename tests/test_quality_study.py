"""The quality study (issue 22): the paper's setting by default, the equal-budget tuning, the paired
statistics, the Pareto front and its picture (``benchmarks/quality.py`` and its helper modules)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import quality  # noqa: E402
from quality_pareto import family, pareto_figure, pareto_front, write_figure  # noqa: E402
from quality_stats import mean_std, paired_difference  # noqa: E402


# ------------------------------------------------------------------------------------------- statistics
def test_the_paired_difference_and_its_t_interval_match_a_hand_computed_example():
    # differences 1, 2, 3: mean 2, sample sd 1; t(0.975, 2) = 4.302653 (tables), so 2 ± 4.302653 / sqrt(3)
    entry = paired_difference([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert (entry["mean"], entry["std"], entry["n"]) == (pytest.approx(2.0), pytest.approx(1.0), 3)
    assert entry["low"] == pytest.approx(2.0 - half, abs=1e-9) and entry["low"] == pytest.approx(-0.4841377)
    assert entry["high"] == pytest.approx(2.0 + half, abs=1e-9)
    # one pair: a difference, no interval
    single = paired_difference([1.5], [1.0])
    assert single["mean"] == pytest.approx(0.5) and single["low"] is None and single["high"] is None
    assert mean_std([4.0]) == (4.0, 0.0) and mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------------------------- the front
def test_the_pareto_front_keeps_the_points_nothing_dominates():
    points = [(0.5, 90.0), (0.6, 89.0), (0.4, 88.0), (0.6, 89.0), (0.7, 80.0), (0.5, 90.0), (0.7, 79.0)]
    # (0.4, 88) is below (0.5, 90) on both; (0.7, 79) below (0.7, 80) on one and level on the other;
    # equal points do not dominate each other
    assert pareto_front(points) == [0, 1, 3, 4, 5]
    assert pareto_front([]) == [] and pareto_front([(0.1, 1.0)]) == [0]


def test_points_are_coloured_by_their_labels_family():
    assert family(["loss.name=infonce", "loss.tms=false"]) == "hard"
    assert family(["loss.labels=priority"]) == "soft"  # the recipe's loss is soft
    assert family({"loss.name": "soft", "loss.hard_mix": 0.4}) == "mix"
    assert family({"loss.name": "soft", "loss.hard_mix": 0.0}) == "soft"
    assert family(["loss.name=mse"]) == "other"


def test_the_picture_is_a_png(tmp_path):
    points = [
        {"label": "pretrained", "kind": "pretrained", "family": "other", "structure": 1.0, "bitext": 66.0},
        {"label": "hard", "kind": "arm", "family": "hard", "structure": 0.8, "bitext": 80.0,
         "structure_std": 0.01, "bitext_std": 0.2},
        {"label": "soft-0", "kind": "trial", "family": "soft", "structure": 0.9, "bitext": 81.0},
    ]  # fmt: skip
    path = write_figure(pareto_figure(points, title="t"), tmp_path / "sub" / "q-pareto.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no points"):
        pareto_figure([], title="t")


# ----------------------------------------------------------------------------------------- the options
def test_a_stronger_teacher_is_only_an_extra_arm_of_a_cut_student():
    args = quality.parse_args(["--quick", "--arms", "hard", "--whole-teacher", "soft_tms"])
    assert args.arms == "hard,soft_tms_whole_teacher"  # asked for, so run even with --arms
    assert args.arm_overrides["soft_tms_whole_teacher"][-1] == f"teacher.name={quality.WHOLE}"
    assert quality.is_extra(args.arm_overrides["soft_tms_whole_teacher"])
    assert not any(quality.is_extra(overrides) for overrides in quality.ARMS.values())  # the paper's setting
    with pytest.raises(SystemExit):  # the whole student's "whole teacher" is its start
        quality.parse_args(["--whole-teacher", "soft"])
    with pytest.raises(SystemExit):
        quality.parse_args(["--quick", "--whole-teacher", "nothing"])


def test_tuning_gives_every_space_the_same_budget_and_checks_the_spaces(tmp_path):
    args = quality.parse_args(["--quick", "--tune", "8"])
    assert args.seeds == 3 and args.arms == quality.RECIPE_ARM
    assert [quality.space_label(path) for path in args.spaces] == ["hard", "soft"]
    grid = tmp_path / "fair_grid.yaml"
    grid.write_text("base: quickstart\nsearch:\n  loss.tau: {grid: [0.05, 0.1]}\n", encoding="utf-8")
    for spaces in (
        str(grid),
        f"tune_spaces/fair_hard.yaml,{grid}",
        "tune_spaces/fair_hard.yaml,nowhere.yaml",
    ):
        with pytest.raises(SystemExit):
            quality.parse_args(["--tune", "2", "--spaces", spaces])
    with pytest.raises(SystemExit):
        quality.parse_args(["--tune", "-1"])


def test_the_fair_spaces_differ_only_in_the_loss_and_search_the_hard_mix():
    from imascl_ray.tune.space import load_space

    spaces = {
        name: load_space(BENCHMARKS.parent / f"tune_spaces/fair_{name}.yaml")
        for name in ("hard", "soft", "mix")
    }
    budget = {
        (s.num_samples, s.seed, s.metric, s.scheduler.name, s.fixed.schedule.max_steps)
        for s in spaces.values()
    }
    assert budget == {(12, 2405, "val/mean/acc", "fifo", 150)}  # same trials, sampler, steps, validation
    assert spaces["hard"].fixed.loss.name == "infonce" and spaces["soft"].fixed.loss.name == "soft"
    assert {"loss.tau", "optim.lr", "loss.margin", "loss.tms"} <= set(spaces["hard"].parameters)
    soft_knobs = {
        "loss.tau",
        "loss.teacher_tau",
        "loss.lam",
        "loss.tms",
        "loss.labels",
        "optim.lr",
        "loss.margin",
    }
    assert set(spaces["soft"].parameters) == soft_knobs
    # Every knob hard InfoNCE tunes, soft labels tune too, over the same range (the margin was missing once).
    for key in spaces["hard"].parameters:
        soft, hard = spaces["soft"].parameters[key], spaces["hard"].parameters[key]
        assert (soft.kind, soft.args) == (hard.kind, hard.args), key
    assert set(spaces["mix"].parameters) == soft_knobs | {"loss.hard_mix"}
    assert spaces["mix"].trial_config({"loss.hard_mix": 0.7}).loss.hard_mix == 0.7
    assert spaces["soft"].fixed.teacher.name is None  # the student's starting checkpoint teaches


def test_space_distributions_become_the_optuna_distributions_tune_would_use():
    from optuna import distributions

    from imascl_ray.tune.search_space import Parameter

    convert = quality.optuna_distribution
    assert convert(Parameter("loss.tau", "loguniform", (0.02, 0.2))) == distributions.FloatDistribution(
        0.02, 0.2, log=True
    )
    assert convert(Parameter("loss.lam", "uniform", (0.0, 1.0))) == distributions.FloatDistribution(0.0, 1.0)
    assert convert(Parameter("x", "int", (16, 64, 16))) == distributions.IntDistribution(16, 64, step=16)
    assert convert(Parameter("x", "int", (10, 45, 15))).choices == (10, 25, 40)
    assert convert(Parameter("loss.tms", "choice", (True, False))).choices == (True, False)
    with pytest.raises(ValueError, match="grid"):
        convert(Parameter("loss.tau", "grid", (0.1,)))


# ------------------------------------------------------------------------------------------ a real run
@pytest.mark.slow
def test_quality_smoke_tunes_both_spaces_and_pairs_the_winners_in_the_papers_setting(tmp_path, capsys):
    """--smoke --tune 1 --seeds 2 on the tiny model cut to one layer, with one extra arm: 2 trials,
    the recipe and the extra arm at 2 seeds, each winner once more (its first seed is its trial)."""
    argv = ["--smoke", "--student-layers", "1", "--tune", "1", "--seeds", "2", "--whole-teacher", "soft_tms"]
    result = quality.main([*argv, "--work-dir", str(tmp_path)])
    printed = json.loads([line for line in capsys.readouterr().out.splitlines() if line.strip()][-1])
    assert printed["benchmark"] == "quality" and printed["setting"].startswith("paper")
    arms = result["arms"]
    assert set(arms) == {
        "pretrained",
        "whole",
        "soft_tms",
        "soft_tms_whole_teacher",
        "tuned_hard",
        "tuned_soft",
    }
    assert "teacher" not in arms and result["extra_arms"] == ["soft_tms_whole_teacher"]
    # the structure's reference is the starting checkpoint: the untrained student keeps all of it
    assert arms["pretrained"]["ood/structure"] == pytest.approx(1.0)
    assert arms["whole"]["ood/structure_whole"] == pytest.approx(1.0) and arms["whole"]["ood/structure"] < 1.0
    # every trained run of the headline was taught by the cut student itself
    for run in tmp_path.glob("runs/*"):
        prepared = json.loads((run / "prepared.json").read_text())
        whole_teacher = "whole_teacher" in run.name
        assert (prepared["teacher"] == prepared["student"]) != whole_teacher, run.name
    assert [trial["space"] for trial in result["trials"]] == ["hard", "soft"]
    assert len(result["runs"]) == 2 + 2 + 2 + 2  # trials, recipe, extra arm, the winners' second seed
    # paired against tuned_hard over the 2 seeds, with an interval; the extra arm is not compared
    assert set(result["paired"]) == {"soft_tms", "tuned_soft"}
    bitext = result["paired"]["soft_tms"]["bitext"]
    assert bitext["n"] == 2 and bitext["low"] <= bitext["mean"] <= bitext["high"]
    assert result["headline"]["baseline"] == "tuned_hard"
    assert result["headline"]["recipe_minus_hard_bitext"] == pytest.approx(bitext["mean"], abs=1e-3)
    assert set(result["targets_met"]) == set(result["targets"])
    labels = {point["label"] for point in result["pareto"]}
    assert labels == {"pretrained", "soft_tms", "tuned_hard", "tuned_soft", "hard-0", "soft-0"}
    assert any(point["front"] for point in result["pareto"])
    # the JSON and the picture beside it, and in the study's MLflow run with every run its child
    assert json.loads((tmp_path / "quality.json").read_text())["paired"] == result["paired"]
    assert (tmp_path / "quality-pareto.png").read_bytes()[:4] == b"\x89PNG"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=result["mlflow"]["uri"])
    parent = client.get_run(result["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"quality-pareto.png", "quality.json"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir()  # beside the store, not ./mlruns of the current folder
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(result["runs"])
