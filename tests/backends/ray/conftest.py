"""Fixtures for the Ray pool tests: one local Ray cluster (2 CPUs) for the whole session.

Starting a cluster costs seconds, so every test shares it: a backend built while this
process is connected uses the cluster as it is and leaves it up at close, and a CLI run
in a subprocess joins it by address. Workers compute with one torch thread each (the
machine may have two cores and other work). Ray missing: skipped locally, a failure in
CI (``.ci/run`` installs the ``ray`` extra).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from ray_testing import CLUSTER_CPUS, need_ray


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray cluster on 127.0.0.1 for the session; its GCS address (host:port)."""
    from swayscope.backends.ray.cluster import LOOPBACK_SWITCH

    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_SWITCH, "0")
    ray = need_ray()
    if ray.is_initialized():
        pytest.fail("this test process is already connected to Ray", pytrace=False)
    context = ray.init(
        address="local", num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()
