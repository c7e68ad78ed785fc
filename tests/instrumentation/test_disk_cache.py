"""The durable tier: lookups through the core, safety of the file, bounds, tools."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sway_testing import Recorder, in_ci

from swayscope.backends.api import TokenDist
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.disk_cache import FILE_NAME, DiskCache, key_digest

MODEL = "model-path@adapter"


def dist(i: int) -> TokenDist:
    return TokenDist(
        np.array([i, i + 1], dtype=np.int64), np.array([-0.5 - i * 1e-9, -1.25]), 1024, -3.0, 4
    )


def make(folder: Path, **kwargs: object) -> tuple[BackendInstrumentation, Recorder]:
    rec = Recorder()
    inst = BackendInstrumentation(
        exporters=[rec], model_id=MODEL, disk_cache=DiskCache(folder, **kwargs)  # type: ignore[arg-type]
    )
    inst.fingerprint(MODEL, "content-a")
    return inst, rec


def test_a_second_process_reads_what_the_first_computed_exactly(tmp_path: Path) -> None:
    first, _ = make(tmp_path)
    computed = first.cached_batch(
        "op", "ft", ["a", "b", "c"], 8, lambda idx: [dist(i) for i in idx]
    )
    first.cached("op", "ft", "d", 8, lambda: dist(9))
    first.close()
    second, rec = make(tmp_path)
    calls: list[int] = []

    def compute(idx: list[int]) -> list[TokenDist]:
        calls.extend(idx)
        return [dist(100 + i) for i in idx]

    again = second.cached_batch("op", "ft", ["a", "b", "c", "e"], 8, compute)
    single = second.cached("op", "ft", "d", 8, lambda: dist(-1))
    assert calls == [3]  # only "e" was computed
    for want, got in zip(computed, again, strict=False):
        assert want.logprobs.tobytes() == got.logprobs.tobytes()
        assert want.token_ids.tobytes() == got.token_ids.tobytes()
        assert (want.tail_logprob, want.n_tokens) == (got.tail_logprob, got.n_tokens)
    assert single.logprobs.tobytes() == dist(9).logprobs.tobytes()
    s = second.stats
    assert (s.cache_hits, s.disk_hits, s.cache_misses) == (4, 4, 1)
    tiers = [e.tier for e in rec.lookups() if e.hit]
    assert tiers == ["disk"] * 4
    # once read, it is in memory: a third lookup is a memory hit
    second.cached("op", "ft", "a", 8, lambda: dist(-1))
    assert [e.tier for e in rec.lookups()][-1] == "memory"
    second.close()


def test_the_key_holds_what_decides_the_value(tmp_path: Path) -> None:
    inst, _ = make(tmp_path)
    inst.cached("op", "ft", "a", 8, lambda: 1.0)
    inst.close()
    cases = {
        "another model content": ("content-b", "ft", 8, "a", ()),
        "another view (a scale)": ("content-a", "scaled_0.5", 8, "a", ()),
        "another top_k": ("content-a", "ft", 16, "a", ()),
        "another prompt": ("content-a", "ft", 8, "a ", ()),
        "other generation params": ("content-a", "ft", 8, "a", (16, ("\n",))),
    }
    for why, (content, view, top_k, prompt, params) in cases.items():
        other, _ = make(tmp_path)
        other.fingerprint(MODEL, content)
        got = other.cached("op", view, prompt, top_k, lambda: 2.0, key_params=params)
        assert got == 2.0, why
        other.close()
    same, _ = make(tmp_path)
    assert same.cached("op", "ft", "a", 8, lambda: 2.0) == 1.0


def test_no_fingerprint_no_disk(tmp_path: Path) -> None:
    """A model whose content nobody vouched for never reaches the disk (a key naming a path
    only would serve another model's numbers)."""
    inst = BackendInstrumentation(model_id="unverified", disk_cache=DiskCache(tmp_path))
    inst.cached("op", "ft", "a", 8, lambda: 1.0)
    inst.close()
    assert DiskCache(tmp_path).stats().entries == 0


def test_the_file_is_the_users_alone_and_holds_no_prompt_text(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    inst, _ = make(folder)
    secret = "the secret prompt 31337"
    inst.cached("op", "ft", secret, 8, lambda: 1.0)
    inst.close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert secret.encode() not in f.read_bytes()


def test_bounded_by_bytes_least_recently_used_go(tmp_path: Path) -> None:
    inst, _ = make(tmp_path, max_bytes=4000)
    for i in range(10):
        inst.cached("op", "ft", f"p{i}", 8, lambda i=i: dist(i))  # ~300 bytes each
    assert inst.flush_disk()
    inst.cached("op", "ft", "p0", 8, lambda: dist(-1))  # a memory hit: the disk sees nothing
    for i in range(10, 30):
        inst.cached("op", "ft", f"p{i}", 8, lambda i=i: dist(i))
    inst.close()
    disk = DiskCache(tmp_path, max_bytes=4000)
    s = disk.stats()
    assert s.nbytes <= 4000 and s.evictions > 0 and s.entries < 30
    with sqlite3.connect(disk.path) as db:
        assert db.execute("SELECT sum(size), count(*) FROM entries").fetchone() == (
            s.nbytes, s.entries,
        )
    survivors = disk.get_many([key_digest(("content-a", "op", "ft", _d(f"p{i}"), 8))
                               for i in range(30)])
    assert len(survivors) == s.entries
    disk.close()


def _d(prompt: str) -> bytes:
    from swayscope.instrumentation.hashing import cache_digest

    return cache_digest(prompt)


WRITER = """
import sys, numpy as np
from swayscope.instrumentation.disk_cache import DiskCache, key_digest
disk = DiskCache(sys.argv[1])
tag = sys.argv[2]
n = int(sys.argv[3])
for i in range(n):
    disk.put(key_digest((tag, i)), np.full(64, i, dtype=np.float64))
    if i % 50 == 0:
        disk.flush()
disk.close()
print("done", flush=True)
"""


def _python(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kwargs,  # type: ignore[call-overload]
    )


def test_processes_that_create_one_file_at_once_all_keep_what_they_wrote(
    tmp_path: Path,
) -> None:
    # Started together on a fresh folder: each may find the file while another is still
    # creating it (tables made, ids not yet set), which once read as "foreign" and set the
    # other's entries aside (CI: 400 of 800).
    tags = ("w", "x", "y", "z")
    procs = [_python(str(tmp_path), tag, "200") for tag in tags]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "corrupt" not in err, err
    assert not list(tmp_path.glob("*.corrupt-*"))
    disk = DiskCache(tmp_path)
    keys = {key_digest((tag, i)): i for tag in tags for i in range(200)}
    got = disk.get_many(list(keys))
    assert len(got) == len(keys)
    assert all(got[k][0] == i for k, i in keys.items())
    assert disk.stats().entries == len(keys)
    with sqlite3.connect(disk.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    disk.close()


def test_sigkill_while_writing_loses_at_most_the_unwritten_batch(tmp_path: Path) -> None:
    proc = _python(str(tmp_path), "k", "1000000")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if (tmp_path / FILE_NAME).exists() and DiskCache(tmp_path).stats().entries > 200:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    disk = DiskCache(tmp_path)
    with sqlite3.connect(disk.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT count(*), sum(size) FROM entries").fetchone()
    s = disk.stats()
    assert s.entries == rows[0] > 200 and s.nbytes == rows[1]
    keys = {key_digest(("k", i)): i for i in range(s.entries)}
    got = disk.get_many(list(keys))
    assert len(got) == s.entries  # a prefix of the writes, every value whole
    assert all(got[k][0] == i for k, i in keys.items())
    disk.close()


@pytest.mark.parametrize("content", ["garbage", "foreign"])
def test_a_corrupt_or_foreign_file_is_set_aside_with_one_warning(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / FILE_NAME
    if content == "garbage":
        path.write_bytes(b"this is not a database " * 200)
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
            db.execute("INSERT INTO notes VALUES ('someone else''s data')")
    with caplog.at_level(logging.WARNING):
        inst, _ = make(tmp_path)
        inst.cached("op", "ft", "a", 8, lambda: 1.0)
        inst.close()
    warnings = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(warnings) == 1
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{FILE_NAME}.corrupt-")]
    assert aside, list(tmp_path.iterdir())
    again, _ = make(tmp_path)
    assert again.cached("op", "ft", "a", 8, lambda: 2.0) == 1.0  # rebuilt, and working
    again.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 KB filesystem (tmpfs): room for the cache file, not for much in it."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if in_ci():
            pytest.fail(f"cannot mount a small tmpfs for the full-disk test: {done.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_warns_once_and_the_run_goes_on_in_memory(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        inst, _ = make(tiny_disk)
        big = np.zeros(20_000)  # 160 KB each: the disk fills after a few
        for i in range(12):
            assert inst.cached("op", "ft", f"p{i}", 8, lambda: big)[0] == 0.0
            inst.flush_disk(5.0)
        again = inst.cached("op", "ft", "p0", 8, lambda: np.ones(1))  # memory still serves
        inst.close()
    assert again[0] == 0.0
    full = [r for r in caplog.records if "disk cache" in r.getMessage()]
    assert len(full) == 1 and "full" in full[0].getMessage()
    assert "memory cache only" in full[0].getMessage()
    assert inst.stats.forward_calls == 12 and inst.disk is not None
    assert inst.disk.stats().write_failures > 0


def test_cache_tools_show_prune_and_clear(tmp_path: Path) -> None:
    inst, _ = make(tmp_path)
    for i in range(20):
        inst.cached("op", "ft", f"p{i}", 8, lambda i=i: dist(i))
    inst.close()
    env = {**os.environ, "SWAYSCOPE_HOME": str(tmp_path / "home")}
    swayscope = [sys.executable, "-m", "swayscope", "cache"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*swayscope, *args, "--cache-dir", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=60)

    shown = run("info")
    assert shown.returncode == 0 and "entries:    20" in shown.stdout, shown.stderr
    pruned = run("prune", "--max-bytes", "2000")
    assert pruned.returncode == 0 and "left" in pruned.stdout
    left = DiskCache(tmp_path).stats()
    assert 0 < left.entries < 20 and left.nbytes <= 2000
    cleared = run("clear")
    assert cleared.returncode == 0 and DiskCache(tmp_path).stats().entries == 0
    missing = subprocess.run([*swayscope, "info"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "no disk cache" in missing.stderr


def test_a_forward_call_never_waits_on_the_disk_writer(tmp_path: Path) -> None:
    """Another process holds the file's write lock: lookups and misses go on at once (their
    values wait for the writer), and land once the lock is released."""
    inst, _ = make(tmp_path)
    inst.cached("op", "ft", "warm", 8, lambda: 0.0)
    assert inst.flush_disk()
    blocker = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, as a busy second process holds it
    t0 = time.perf_counter()
    for i in range(300):
        assert inst.cached("op", "ft", f"p{i}", 8, lambda i=i: float(i)) == float(i)
    assert inst.cached("op", "ft", "warm", 8, lambda: 1.0) == 0.0
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed  # the writer's busy timeout is 5 s: nobody waited on it
    blocker.execute("ROLLBACK")
    blocker.close()
    inst.close()
    assert DiskCache(tmp_path).stats().entries == 301


def test_a_file_another_process_is_still_creating_is_waited_for_not_set_aside(
    tmp_path: Path,
) -> None:
    import fcntl
    import threading

    from swayscope.instrumentation import disk_cache as dc

    # Another process mid-way through creating the file: the lock held, tables made, the
    # application id not yet written.
    lock = os.open(tmp_path / dc.LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    half = sqlite3.connect(tmp_path / dc.FILE_NAME, isolation_level=None)
    half.execute("PRAGMA journal_mode = WAL")
    half.executescript(dc._SCHEMA)
    opened: list[DiskCache] = []
    opener = threading.Thread(target=lambda: opened.append(DiskCache(tmp_path)))
    opener.start()
    opener.join(0.5)
    assert opener.is_alive()  # it waits for the creator
    half.execute(f"PRAGMA application_id = {dc._APPLICATION_ID}")
    half.execute(f"PRAGMA user_version = {dc._SCHEMA_VERSION}")
    half.close()
    os.close(lock)
    opener.join(10)
    assert opened and opened[0].enabled
    assert not list(tmp_path.glob("*.corrupt-*"))
    opened[0].close()
