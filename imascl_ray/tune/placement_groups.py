"""Freeing the placement groups that trials stopped by the scheduler leave behind.

When ASHA stops a trial, Tune ends the trial's process; the Ray Train run inside it (its controller runs
in that process) dies with it, but the placement group it reserved for its workers is scoped to the
job, so it stays: the next trial's workers then wait for CPUs that never free up ("worker group startup
timed out"). Ray Train 2.60 ships a ``PlacementGroupCleaner`` for this, but it finds the controller
through the State API, which needs a dashboard and, with several clusters on one machine, asks
whichever cluster started last (it then logs "Found multiple active Ray instances", or frees nothing).

Ray's public placement-group table (``ray.util.placement_group_table``) does not say who made a group,
so this reads the GCS table through ``ray._private.state`` (the same accessor the public function
uses) and its protobuf records: a group that is still reserved, not detached, made by an actor of this
job that is dead, serves nobody. **This is the project's one private use of Ray**: Ray is pinned below
the next minor release in ``pyproject.toml``, and ``tests/test_tune_ray_pins.py`` checks every field
read here, so an upgrade fails in CI, not silently in a sweep.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

logger = logging.getLogger(__name__)

#: The GCS states of a placement group that still holds (or waits for) resources.
LIVE_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")
#: The fields of ``gcs_pb2.PlacementGroupTableData`` read here (checked by the pin test).
FIELDS_READ = (
    "placement_group_id",
    "state",
    "is_detached",
    "creator_actor_id",
    "creator_actor_dead",
    "creator_job_id",
)


def orphaned_placement_groups() -> list[Any]:
    """Placement groups of this job that outlived the actor that made them (see the module docstring)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup

    table = gcs_pb2.PlacementGroupTableData
    live = {table.PlacementGroupState.Value(name) for name in LIVE_STATES}
    job = ray.get_runtime_context().get_job_id()
    orphans = []
    for blob in state._connect_and_get_accessor().get_placement_group_table():
        data = table.FromString(blob)
        made_by_actor = bool(data.creator_actor_id) and not ray.ActorID(data.creator_actor_id).is_nil()
        if (
            data.state in live
            and not data.is_detached
            and made_by_actor
            and data.creator_actor_dead
            and data.creator_job_id.hex() == job
        ):
            orphans.append(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
    return orphans


def remove_orphaned_placement_groups() -> int:
    """Remove :func:`orphaned_placement_groups`; returns how many."""
    from ray.util.placement_group import remove_placement_group

    removed = 0
    for group in orphaned_placement_groups():
        try:
            remove_placement_group(group)
            removed += 1
        except Exception as error:  # already gone
            logger.debug("placement group %s: %s", group.id.hex(), error)
    if removed:
        logger.info("[tune] freed %d placement group(s) left by stopped trials", removed)
    return removed
