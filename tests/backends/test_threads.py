"""The thread count: OMP_NUM_THREADS, the affinity mask, the cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swayscope.backends.threads import (
    apply_threads,
    cgroup_cpu_limit,
    check_threads,
    default_threads,
    usable_cpus,
)
from swayscope.errors import ConfigError


def test_omp_num_threads_wins_when_it_is_a_positive_integer() -> None:
    assert default_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert default_threads({"OMP_NUM_THREADS": " 1 "}) == 1
    assert default_threads({"OMP_NUM_THREADS": "0"}) == usable_cpus()
    assert default_threads({"OMP_NUM_THREADS": "many"}) == usable_cpus()
    assert default_threads({}) == usable_cpus()


def test_usable_cpus_is_within_the_affinity_mask() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, line: str, files: dict[str, str]) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text(line + "\n")
    root = tmp_path / "fs"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, root


def test_cgroup_v2_quota_innermost_or_tightest(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path, "0::/jobs/me",
        {"jobs/me/cpu.max": "150000 100000\n", "jobs/cpu.max": "100000 100000\n",
         "cpu.max": "max 100000\n"},
    )
    assert cgroup_cpu_limit(proc, root) == 1.0
    proc, root = _cgroup(tmp_path / "b", "0::/x", {"x/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc",
        {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
         "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(proc, root) == 2.5
    proc, root = _cgroup(
        tmp_path / "b", "4:cpu:/", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    )
    assert cgroup_cpu_limit(proc, root) is None
    assert cgroup_cpu_limit(tmp_path / "missing", root) is None


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "4"])
def test_threads_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        check_threads(bad)


def test_apply_threads_sets_torch() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads(None) == default_threads() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
