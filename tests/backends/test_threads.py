"""The thread count (OMP_NUM_THREADS, the affinity mask, the cgroup CPU quota, the bound on
a given count) and OpenMP's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swayscope.backends import threads
from swayscope.backends.threads import (
    ThreadChoice,
    apply_threads,
    cgroup_cpu_limit,
    check_threads,
    choose_threads,
    prefer_passive_wait,
    usable_cpus,
)
from swayscope.errors import ConfigError


def test_omp_num_threads_wins_when_it_is_a_positive_integer_within_the_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}) == ThreadChoice(
        3, "OMP_NUM_THREADS")
    assert choose_threads(None, {"OMP_NUM_THREADS": " 1 "}).count == 1
    capped = choose_threads(None, {"OMP_NUM_THREADS": "20000"})
    assert capped == ThreadChoice(4, "OMP_NUM_THREADS=20000, capped at 4 CPU(s)")
    for ignored in ("0", "many", ""):
        assert choose_threads(None, {"OMP_NUM_THREADS": ignored}).count == 4
    assert choose_threads(2, {"OMP_NUM_THREADS": "3"}) == ThreadChoice(2, "set")


def test_the_default_is_every_cpu_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    assert choose_threads(None, {}) == ThreadChoice(2, "the 2 CPU(s) this process may use")


def test_the_wait_policy_is_passive_unless_the_user_chose_one() -> None:
    env: dict[str, str] = {}
    prefer_passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    prefer_passive_wait(env)
    assert env == {"OMP_WAIT_POLICY": "active"}


def test_the_command_sets_the_wait_policy_before_torch_loads() -> None:
    code = (
        "import importlib, os, sys\n"
        "cli = importlib.import_module('swayscope.cli.app')\n"
        "cli.app = lambda: print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
        "cli.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    assert out.split() == ["PASSIVE", "False"]


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


def test_threads_are_bounded_by_the_cpus() -> None:
    assert check_threads(4, limit=4) == 4
    with pytest.raises(ConfigError, match=r"threads 20000 is more than the 4 CPU\(s\)"):
        check_threads(20000, limit=4)
    with pytest.raises(ConfigError, match="give at most"):
        choose_threads(12345678901234567890)


def test_apply_threads_sets_torch() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == ThreadChoice(1, "set")
        assert torch.get_num_threads() == 1
        chosen = apply_threads(None)
        assert 1 <= chosen.count <= usable_cpus() and torch.get_num_threads() == chosen.count
    finally:
        torch.set_num_threads(before)
