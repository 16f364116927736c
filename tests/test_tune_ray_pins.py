"""What the project assumes about Ray beyond its public API, checked so that an upgrade fails here.

``imascl_ray/tune/placement_groups.py`` reads the GCS placement-group table through ``ray._private``
and ``imascl_ray/logs.py`` names the logger of Ray Train's ``PlacementGroupCleaner``; Ray is pinned to
2.60.x in ``pyproject.toml`` for them (docs/tuning.md, "Ray versions", says so). If a new Ray moves any of
these, a test here fails with what moved, before a sweep silently stops freeing placement groups.
"""

from __future__ import annotations

import importlib
import inspect
import re
import time
from pathlib import Path

import pytest
import ray
from packaging.requirements import Requirement

from imascl_ray.logs import RAY_TRAIN_CLEANER_LOGGER
from imascl_ray.tune import placement_groups

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_ray_is_the_pinned_one():
    # tomllib is Python 3.11+; the project supports 3.10, so the one dependency line is read directly.
    (line,) = re.findall(r'^\s*"(ray\[[^"]*)",', (ROOT / "pyproject.toml").read_text(), re.M)
    ray_requirement = Requirement(line)
    assert ray_requirement.specifier.contains(ray.__version__), (
        f"Ray {ray.__version__} is outside the pin {ray_requirement.specifier}: check "
        "imascl_ray/tune/placement_groups.py and logs.py against it, then move the pin"
    )
    assert "<" in str(ray_requirement.specifier)  # pinned above, not only below


def test_the_placement_group_table_reader_finds_what_it_reads():
    from ray._private.state import GlobalState
    from ray._raylet import GlobalStateAccessor
    from ray.core.generated import gcs_pb2

    assert callable(GlobalState._connect_and_get_accessor)
    assert callable(GlobalStateAccessor.get_placement_group_table)
    table = gcs_pb2.PlacementGroupTableData
    missing = set(placement_groups.FIELDS_READ) - set(table.DESCRIPTOR.fields_by_name)
    assert not missing, f"PlacementGroupTableData lost {missing}"
    states = {value.name for value in table.PlacementGroupState.DESCRIPTOR.values}
    assert set(placement_groups.LIVE_STATES) | {"REMOVED"} == states


def test_the_cleaner_logger_is_still_the_one_that_warns_without_a_dashboard():
    module = importlib.import_module(RAY_TRAIN_CLEANER_LOGGER)
    assert module.logger.name == RAY_TRAIN_CLEANER_LOGGER
    assert "Failed to query Ray Train Controller actor state" in inspect.getsource(module)


def test_the_report_line_is_logged_outside_ray_train_on_the_root_logger():
    """quiet_ray_train_reports raises the worker's root logger: it works while Ray's report line goes
    through a logger named after its file, which propagates to the root."""
    from ray.train.v2._internal.execution import context

    source = inspect.getsource(context)
    assert "Reporting training result" in source
    assert re.search(r"^logger = logging\.getLogger\(__file__\)$", source, re.M)


@pytest.mark.slow
def test_a_placement_group_whose_creator_died_is_freed_and_live_ones_are_not():
    """The reaper on a real local cluster: a group made by a killed actor is freed; one made by a live
    actor, and one made by the driver, are left alone."""
    from ray.util.placement_group import placement_group, placement_group_table

    @ray.remote(num_cpus=0)
    class Maker:
        def make(self) -> str:
            group = placement_group([{"CPU": 1}])
            ray.get(group.ready(), timeout=60)
            return group.id.hex()

    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="ERROR")
    try:
        doomed, alive = Maker.remote(), Maker.remote()
        orphan = ray.get(doomed.make.remote())
        kept = ray.get(alive.make.remote())
        mine = placement_group([{"CPU": 1}])
        ray.get(mine.ready(), timeout=60)
        assert ray.available_resources().get("CPU", 0) == 0
        assert placement_groups.orphaned_placement_groups() == []
        ray.kill(doomed)
        found = []
        for _ in range(100):  # the GCS marks the creator dead shortly after the kill
            found = [group.id.hex() for group in placement_groups.orphaned_placement_groups()]
            if found:
                break
            time.sleep(0.1)
        assert found == [orphan]
        assert placement_groups.remove_orphaned_placement_groups() == 1
        states = {pg_id: entry["state"] for pg_id, entry in placement_group_table().items()}
        assert states[orphan] == "REMOVED"
        assert states[kept] == "CREATED" and states[mine.id.hex()] == "CREATED"
        assert placement_groups.orphaned_placement_groups() == []
    finally:
        ray.shutdown()
