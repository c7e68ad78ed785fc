"""Fixtures for the Ray pool tests: one local Ray cluster (2 CPUs) for the whole session.

Starting a cluster costs seconds, so every test shares it: a backend built while this
process is connected uses the cluster as it is and leaves it up at close, and a CLI run
in a subprocess joins it by address. Workers compute with one torch thread each (the
machine may have two cores and other work). Ray missing: skipped locally, a failure in
CI (``.ci/run`` installs the ``ray`` extra).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

TESTS = Path(__file__).resolve().parents[2]
#: The CPUs of the session's cluster (two workers of one CPU each).
CLUSTER_CPUS = 2


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_ray() -> ModuleType:
    if importlib.util.find_spec("ray") is None:
        message = "ray is not installed (pip install 'swayscope[ray]'; .ci/run installs it)"
        if in_ci():
            pytest.fail(message + " — CI must run the Ray pool tests", pytrace=False)
        pytest.skip(message)
    import ray

    return ray


def exporter_servers() -> ModuleType:
    """The exporter tests' server helpers (rotel, free ports), loaded by path under their
    own module name so whichever test imports them first, there is one copy."""
    name = "exporter_servers"
    if name not in sys.modules:
        path = TESTS / "instrumentation" / "exporters" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
