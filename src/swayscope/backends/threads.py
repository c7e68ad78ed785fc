"""How many CPU threads a backend computes with, and how its idle threads wait.

Two things made the old default (every core this process may use) a trap on a busy
machine, measured on 2 cores with other jobs running (``bench/bench_threads.py``,
numbers in docs/benchmarks.md):

- OpenMP's threads *spin* while they wait for each other (libgomp's default wait
  policy). A spinning thread holds a core another process wants, and a thread that
  lost its core holds every other thread up: the tiny suite ran 10-40x slower with
  2 threads than with 1. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead; libgomp
  reads it once, when torch loads, so the CLI sets it first
  (:func:`prefer_passive_wait`).
- Threads beyond the cores other processes leave free only wait for a core. The
  default count is the CPUs this process may use (its affinity mask, capped by the
  cgroup CPU quota) less what other processes kept busy while this one started
  (from ``/proc/stat``, this process's own CPU time taken out), rounded, at least 1
  (:func:`choose_threads`).

``OMP_NUM_THREADS``, the ``threads`` setting and ``--threads`` override the choice;
a count above the CPUs this process may use is refused (a setting) or capped (the
variable, which is not swayscope's own).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from swayscope.errors import ConfigError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")
#: How OpenMP threads wait for work when swayscope loads torch: sleeping, not spinning.
WAIT_POLICY = "PASSIVE"
#: The shortest and the longest window over which other processes' CPU use is measured
#: (a window still too short is waited out; one too old is started afresh).
MIN_WINDOW_S = 0.25
MAX_WINDOW_S = 60.0


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


def _affinity() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota."""
    mask = _affinity()
    cpus = len(mask) if mask is not None else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.floor(limit)))
    return max(1, cpus)


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Busy seconds of the CPUs this process may run on, and this process's own CPU
    seconds, at one moment."""

    at: float
    """``time.monotonic()``"""
    busy_s: float
    own_s: float


def cpu_sample(stat: Path = PROC_STAT, cpus: set[int] | None = None) -> CpuSample | None:
    """A :class:`CpuSample` from ``/proc/stat`` over ``cpus`` (default: the affinity mask);
    None where there is no such file (not Linux)."""
    try:
        lines = stat.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    cpus = _affinity() if cpus is None else cpus
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
            fields = [int(v) for v in rest.split()]
        except ValueError:
            continue
        if cpus is not None and index not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is counted in user)
        busy += sum(fields[:8]) - sum(fields[3:5])
    times = os.times()
    return CpuSample(time.monotonic(), busy / tick, times.user + times.system)


#: The start of the window :func:`others_busy` measures next: this module's import (in
#: the CLI, the command's start: imports, spec checks and model load fall inside it),
#: then each measurement's end.
_window_start = cpu_sample()


def busy_between(since: CpuSample, now: CpuSample) -> float:
    """CPUs other processes kept busy, on average, from ``since`` to ``now``."""
    wall = now.at - since.at
    if wall <= 0:
        return 0.0
    others = (now.busy_s - since.busy_s) - (now.own_s - since.own_s)
    return max(0.0, others / wall)


def others_busy() -> float | None:
    """CPUs other processes kept busy over the current window (at least
    :data:`MIN_WINDOW_S` long, waiting out the rest of a short one; one older than
    :data:`MAX_WINDOW_S` is started afresh); None where ``/proc/stat`` is missing."""
    global _window_start
    start = _window_start
    if start is None or time.monotonic() - start.at > MAX_WINDOW_S:
        start = cpu_sample()
        if start is None:
            return None
    wait = start.at + MIN_WINDOW_S - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    now = cpu_sample()
    if now is None:
        return None
    _window_start = now
    return busy_between(start, now)


@dataclass(frozen=True, slots=True)
class ThreadChoice:
    """A thread count and how it was chosen (shown in the run report)."""

    count: int
    why: str


def free_cores(usable: int, busy: float) -> int:
    """``usable`` less ``busy``, rounded to the nearest core, at least 1."""
    return max(1, min(usable, math.floor(usable - busy + 0.5)))


def check_threads(threads: object, limit: int | None = None) -> int | None:
    """``threads`` when it is None or a positive integer no larger than ``limit``;
    :class:`ConfigError` otherwise."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(
            f"threads must be a positive integer (or left out: swayscope chooses from the "
            f"free cores); got {threads!r}"
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
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    busy: float | None = None,
) -> ThreadChoice:
    """``threads`` when given; else ``OMP_NUM_THREADS`` when it is a positive integer
    (capped at :func:`usable_cpus`); else the usable CPUs that other processes leave
    free (``busy``: CPUs they keep busy, default :func:`others_busy`)."""
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
    if busy is None:
        busy = others_busy()
    if busy is None:
        return ThreadChoice(usable, f"{usable} CPU(s)")
    return ThreadChoice(
        free_cores(usable, busy), f"{usable} CPU(s), {busy:.1f} busy with other processes"
    )


def default_threads(env: Mapping[str, str] | None = None) -> int:
    """The thread count :func:`choose_threads` picks when none is given."""
    return choose_threads(None, env).count


def apply_threads(threads: int | None) -> ThreadChoice:
    """Set torch's intra-op threads to :func:`choose_threads` of ``threads``; returns it."""
    choice = choose_threads(threads)
    import torch

    if torch.get_num_threads() != choice.count:
        torch.set_num_threads(choice.count)
    return choice


def prefer_passive_wait(env: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY`` to :data:`WAIT_POLICY` unless it is set; whether this
    process's OpenMP will see it (it must happen before torch loads: libgomp reads it once).

    Processes started later (Ray workers) inherit it either way."""
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules


__all__ = [
    "MAX_WINDOW_S",
    "MIN_WINDOW_S",
    "WAIT_POLICY",
    "CpuSample",
    "ThreadChoice",
    "apply_threads",
    "busy_between",
    "cgroup_cpu_limit",
    "check_threads",
    "choose_threads",
    "cpu_sample",
    "default_threads",
    "free_cores",
    "others_busy",
    "prefer_passive_wait",
    "too_many_threads",
    "usable_cpus",
]
