"""Shared test settings: the same environment as ``.ci/env.sh``, set before anything imports Ray."""

from __future__ import annotations

from imascl_ray.testing import set_test_environment

set_test_environment()
