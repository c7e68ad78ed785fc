"""How many CPU threads a backend computes with.

torch's default is the machine's core count, which oversubscribes a process
pinned to fewer cores (``taskset``, a container's CPU quota) and slows every
matmul when other processes compete. The default here is what this process may
actually use: ``OMP_NUM_THREADS`` when set, else the CPUs in its affinity mask,
capped by the cgroup CPU quota (``cpu.max``, or cgroup v1's ``cpu.cfs_quota_us``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from swayscope.errors import ConfigError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_dirs(proc_cgroup: Path, root: Path) -> list[Path]:
    """The cgroup folders of this process, innermost first (v2 unified, then v1 ``cpu``)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            base = root
        elif "cpu" in controllers.split(","):
            base = root / controllers
            if not base.is_dir():
                base = root / "cpu"
        else:
            continue
        here = base / rel.lstrip("/")
        while True:
            dirs.append(here)
            if here == base:
                break
            here = here.parent
    return dirs


def _quota(folder: Path) -> float | None:
    """CPUs the quota in ``folder`` allows (None: no quota there)."""
    try:
        quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        p = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> float | None:
    """The tightest CPU quota on this process's cgroups, in CPUs (None: none set)."""
    quotas = [q for q in (_quota(d) for d in _cgroup_dirs(proc_cgroup, root)) if q is not None]
    return min(quotas) if quotas else None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


def default_threads(env: Mapping[str, str] | None = None) -> int:
    """``OMP_NUM_THREADS`` when it is a positive integer, else :func:`usable_cpus`."""
    env = os.environ if env is None else env
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
        log.warning("OMP_NUM_THREADS=%r is not a positive integer; ignored", raw)
    return usable_cpus()


def check_threads(threads: object) -> int | None:
    """``threads`` when it is None or a positive integer; :class:`ConfigError` otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(
            f"threads must be a positive integer (or left out: the cores this process may "
            f"use); got {threads!r}"
        )
    return threads


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns it."""
    n = check_threads(threads) or default_threads()
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


__all__ = [
    "apply_threads",
    "cgroup_cpu_limit",
    "check_threads",
    "default_threads",
    "usable_cpus",
]
