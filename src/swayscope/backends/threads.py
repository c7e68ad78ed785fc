"""How many CPU threads a backend computes with, and how its idle threads wait.

The old default, every core this process may use with OpenMP's threads *spinning* while
they wait for each other (libgomp's default wait policy), was a trap on a busy machine: a
spinning thread holds a core another process wants, and a thread that lost its core holds
every other thread up. On 2 cores with other jobs running, 2 such threads ran the tiny
suite 10-45x slower than 1 (``bench/bench_threads.py``; numbers in docs/benchmarks.md).

``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead. libgomp reads it once,
when torch loads, so the CLI sets it first (:func:`prefer_passive_wait`). With it, every
core this process may use (its affinity mask, capped by the cgroup CPU quota) is the
fastest default measured, idle and under load alike: fewer threads than cores when other
processes are busy was 1.4-2x slower (the scheduler shares the CPUs per thread).

``OMP_NUM_THREADS``, the ``threads`` setting and ``--threads`` override the default; a
count above the CPUs this process may use is refused (a setting) or capped (the variable,
which is not swayscope's own).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from swayscope.errors import ConfigError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: How OpenMP threads wait for work when swayscope loads torch: sleeping, not spinning.
WAIT_POLICY = "PASSIVE"


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


@dataclass(frozen=True, slots=True)
class ThreadChoice:
    """A thread count and how it was chosen (shown in the run report)."""

    count: int
    why: str


def check_threads(threads: object, limit: int | None = None) -> int | None:
    """``threads`` when it is None or a positive integer no larger than ``limit``;
    :class:`ConfigError` otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(
            f"threads must be a positive integer (or left out: the CPUs this process may "
            f"use); got {threads!r}"
        )
    if limit is not None and threads > limit:
        raise ConfigError(f"threads {threads} is {too_many_threads(limit)}")
    return threads


def too_many_threads(limit: int) -> str:
    """What is wrong with a thread count above ``limit``, and what to do."""
    return (
        f"more than the {limit} CPU(s) this process may use (affinity mask and cgroup CPU "
        f"quota); give at most {limit}, or leave it out to let swayscope choose"
    )


def choose_threads(
    threads: int | None = None, env: Mapping[str, str] | None = None
) -> ThreadChoice:
    """``threads`` when given; else ``OMP_NUM_THREADS`` when it is a positive integer
    (capped at :func:`usable_cpus`); else :func:`usable_cpus`."""
    usable = usable_cpus()
    given = check_threads(threads, usable)
    if given is not None:
        return ThreadChoice(given, "set")
    env = os.environ if env is None else env
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > usable:
            log.warning(
                "OMP_NUM_THREADS=%s is more than the %d CPU(s) this process may use; using %d",
                raw, usable, usable,
            )
            return ThreadChoice(usable, f"OMP_NUM_THREADS={raw}, capped at {usable} CPU(s)")
        if value > 0:
            return ThreadChoice(value, "OMP_NUM_THREADS")
        log.warning("OMP_NUM_THREADS=%r is not a positive integer; ignored", raw)
    return ThreadChoice(usable, f"the {usable} CPU(s) this process may use")


def apply_threads(threads: int | None) -> ThreadChoice:
    """Set torch's intra-op threads to :func:`choose_threads` of ``threads``; returns it."""
    choice = choose_threads(threads)
    import torch

    if torch.get_num_threads() != choice.count:
        torch.set_num_threads(choice.count)
    return choice


def prefer_passive_wait(env: MutableMapping[str, str] | None = None) -> None:
    """Set ``OMP_WAIT_POLICY`` to :data:`WAIT_POLICY` unless it is set. It takes effect only
    if torch has not loaded yet (libgomp reads it once, then); processes started later
    (Ray workers) inherit it either way."""
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


__all__ = [
    "WAIT_POLICY",
    "ThreadChoice",
    "apply_threads",
    "cgroup_cpu_limit",
    "check_threads",
    "choose_threads",
    "prefer_passive_wait",
    "too_many_threads",
    "usable_cpus",
]
