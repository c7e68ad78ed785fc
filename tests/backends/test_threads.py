"""The thread count (OMP_NUM_THREADS, the affinity mask, the cgroup CPU quota, the cores
other processes keep busy) and OpenMP's wait policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swayscope.backends import threads
from swayscope.backends.threads import (
    CpuSample,
    apply_threads,
    busy_between,
    cgroup_cpu_limit,
    check_threads,
    choose_threads,
    cpu_sample,
    free_cores,
    others_busy,
    prefer_passive_wait,
    usable_cpus,
)
from swayscope.errors import ConfigError


def test_omp_num_threads_wins_when_it_is_a_positive_integer_within_the_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}) == threads.ThreadChoice(
        3, "OMP_NUM_THREADS")
    assert choose_threads(None, {"OMP_NUM_THREADS": " 1 "}).count == 1
    capped = choose_threads(None, {"OMP_NUM_THREADS": "20000"})
    assert capped == threads.ThreadChoice(4, "OMP_NUM_THREADS=20000, capped at 4 CPU(s)")
    for ignored in ("0", "many", ""):
        assert choose_threads(None, {"OMP_NUM_THREADS": ignored}, busy=0.0).count == 4
    assert choose_threads(2, {"OMP_NUM_THREADS": "3"}) == threads.ThreadChoice(2, "set")


def test_the_default_is_the_cpus_other_processes_leave_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    # The bench's case: two busy processes on two cores leave none free; one thread.
    assert choose_threads(None, {}, busy=1.9) == threads.ThreadChoice(
        1, "2 CPU(s), 1.9 busy with other processes")
    assert choose_threads(None, {}, busy=0.1).count == 2
    assert choose_threads(None, {}, busy=0.6).count == 1
    assert [free_cores(8, b) for b in (0.0, 0.4, 0.6, 3.0, 7.6, 20.0)] == [8, 8, 7, 5, 1, 1]


def test_other_processes_cpu_time_is_measured_without_this_ones() -> None:
    start = CpuSample(at=10.0, busy_s=100.0, own_s=5.0)
    # Over 2 s, the CPUs were busy 3.5 s, 1.5 of them this process's own.
    assert busy_between(start, CpuSample(12.0, 103.5, 6.5)) == pytest.approx(1.0)
    assert busy_between(start, CpuSample(12.0, 100.5, 6.5)) == 0.0  # never below 0
    assert busy_between(start, start) == 0.0


def test_cpu_sample_reads_the_cpus_of_the_affinity_mask(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  999 0 999 999 0 0 0 0 0 0\n"
        "cpu0 100 10 50 1000 40 1 2 3 0 0\n"
        "cpu1 200 0 0 500 0 0 0 0 0 0\n"
        "intr 12345\n"
    )
    tick = os.sysconf("SC_CLK_TCK")
    one = cpu_sample(stat, cpus={0})
    both = cpu_sample(stat, cpus={0, 1})
    assert one is not None and both is not None
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy.
    assert one.busy_s == pytest.approx(166 / tick)
    assert both.busy_s == pytest.approx(366 / tick)
    assert cpu_sample(tmp_path / "missing") is None


def test_a_busy_process_is_seen() -> None:
    if cpu_sample() is None:
        pytest.skip("no /proc/stat here (not Linux)")
    others_busy()  # start a fresh window
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        seen = others_busy()
    finally:
        child.kill()
        child.wait()
    assert seen is not None and 0.5 <= seen <= usable_cpus() + 0.1, seen


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
        assert apply_threads(1) == threads.ThreadChoice(1, "set")
        assert torch.get_num_threads() == 1
        chosen = apply_threads(None)
        assert 1 <= chosen.count <= usable_cpus() and torch.get_num_threads() == chosen.count
    finally:
        torch.set_num_threads(before)
