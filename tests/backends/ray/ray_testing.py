"""Helpers of the Ray pool tests (a uniquely named module: the test folder is on sys.path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from sway_testing import missing

TESTS = Path(__file__).resolve().parents[2]
#: The CPUs of the session's cluster (two workers of one CPU each).
CLUSTER_CPUS = 2
#: The training steps the sweep tests keep checkpoints at (the last is the plan's end).
CHECKPOINT_STEPS = (0, 2, 4, 6)


def need_ray() -> ModuleType:
    if importlib.util.find_spec("ray") is None:
        missing(
            "ray is not installed (pip install 'swayscope[ray]'; .ci/run installs it)",
            "the Ray pool tests",
        )
    import ray

    return ray


def _shared(name: str, folder: Path) -> ModuleType:
    """A helper module of another test folder, loaded by path under its own name so
    whichever test imports it first, there is one copy."""
    if name not in sys.modules:
        path = folder / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def exporter_servers() -> ModuleType:
    """The exporter tests' server helpers: rotel, Prometheus, free ports, bounded waits."""
    return _shared("exporter_servers", TESTS / "instrumentation" / "exporters")


def dashboard_queries() -> ModuleType:
    """The ops tests' reader of the Grafana dashboard's queries."""
    return _shared("dashboard_queries", TESTS / "ops")
