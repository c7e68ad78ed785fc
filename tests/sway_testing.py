"""Helpers shared by tests in several folders (a uniquely named module; tests/ is on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest

from swayscope.backends.api import DifferentialBackend
from swayscope.cli import FLAG_OF
from swayscope.instrumentation.events import CacheLookup, Event, ForwardCall
from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.exporters.factory import build_exporters
from swayscope.instrumentation.settings import TelemetrySettings, resolve_settings
from swayscope.probes.base import Probe, ProbeContext, ProbeResult, RunDefaults


def in_ci() -> bool:
    """Whether CI runs the tests (``CI`` set, as .ci/run does), where everything is installed."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(message: str, tests: str) -> NoReturn:
    """What ``tests`` need is absent: skip locally, fail in CI, so that a skip never hides a
    missing install there."""
    if in_ci():
        pytest.fail(f"{message} — CI must run {tests}", pytrace=False)
    pytest.skip(message)


def cli_settings(
    env: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    **given: object,
) -> TelemetrySettings:
    """Settings as the CLI resolves them: errors name the flags (or ``sources``)."""
    return resolve_settings(given, sources={**FLAG_OF, **(sources or {})}, env=env)


def cli_exporters(
    env: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    **given: object,
) -> list[Exporter]:
    """The exporters the CLI would build for these flag values."""
    return build_exporters(cli_settings(env, sources, **given), env=env)


class Recorder(Exporter):
    """A user-defined exporter: keeps every event it is handed (thread-safe)."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flushed = 0
        self.shut = False
        self._lock = threading.Lock()

    def export(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut = True

    def lookups(self) -> list[CacheLookup]:
        return [e for e in self.events if isinstance(e, CacheLookup)]

    def calls(self) -> list[ForwardCall]:
        return [e for e in self.events if isinstance(e, ForwardCall)]


class ProbeRun(NamedTuple):
    results: list[ProbeResult]
    ctx: ProbeContext


def run_probes(
    backend: DifferentialBackend, probes: Sequence[Probe], seed: int = 0
) -> ProbeRun:
    """Run ``probes`` in order the way the runner does (later probes visible for calibration),
    without telemetry or error handling: what a probe test needs."""
    ctx = ProbeContext(backend=backend, defaults=RunDefaults(seed=seed))
    results = []
    for i, probe in enumerate(probes):
        ctx.later_probes = [(p.spec, p) for p in probes[i + 1 :]]
        results.append(probe.run(ctx))
    return ProbeRun(results, ctx)


DUMMY_SPEC = """\
version: 1
name: cli-test
models:
  kind: dummy
  adapter_strength: {strength}
  latency_ms: {latency}
suite:
  - kind: null_adapter
  - kind: delta_kl
  - kind: adapter_ablation
  - kind: prompt_collapse
  - kind: perplexity_shift
"""


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        SWAYSCOPE_HOME=str(tmp_path / "home"),
        HF_HUB_OFFLINE="1",
        COLUMNS="160",
    )
    for key in list(env):
        if key.startswith("OTEL_"):
            del env[key]
    return env


def swayscope(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``swayscope`` command in a subprocess, in ``tmp_path``, with a clean env."""
    return subprocess.run(
        [sys.executable, "-m", "swayscope", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(tmp_path), cwd=tmp_path,
    )


def _sigint_as_usual() -> None:
    # A shell without job control starts a background job (`pytest ... &`) with SIGINT
    # ignored, and children inherit that: a Ctrl-C test's SIGINT would then do nothing.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_swayscope(tmp_path: Path, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """Start the ``swayscope`` command as :func:`swayscope` runs it, for tests that signal
    it (SIGINT reaches it as a Ctrl-C even when the tests run as a background job).
    ``log``: stdout and stderr go to that file (a test can follow it) instead of pipes."""
    out = log.open("w") if log is not None else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "swayscope", *args],
            stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT if out else subprocess.PIPE,
            text=True, env=cli_env(tmp_path), cwd=tmp_path, preexec_fn=_sigint_as_usual,
        )
    finally:
        if out is not None:
            out.close()


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc (a zombie counts as gone)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """The live processes below ``pid``: its children, theirs, and so on."""
    parents = _parents()
    found: set[int] = set()
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent == pid or parent in found}
        grew = not more <= found
        found |= more
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (not zombies)."""
    return pids & set(_parents())


class Stopped(NamedTuple):
    seconds: float
    """From the signal to the process's exit."""
    left: set[int]
    """Processes it started that still ran 10 s after it exited."""


def stop_with(
    proc: subprocess.Popen[str], signum: int, started: set[int] | None = None
) -> Stopped:
    """Send ``signum`` to ``proc``; how long it took to exit, and which of the processes it
    started (``started``, seen earlier, plus those below it now) outlived it by 10 s."""
    below = (started or set()) | descendants(proc.pid)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"swayscope still ran 60 s after signal {signum}")
    seconds = time.monotonic() - sent
    deadline = time.monotonic() + 10
    while alive(below) and time.monotonic() < deadline:
        time.sleep(0.1)
    return Stopped(seconds, alive(below))


def write_spec(tmp_path: Path, strength: float = 1.0, latency: float = 0.0) -> Path:
    spec = tmp_path / "suite.yaml"
    spec.write_text(DUMMY_SPEC.format(strength=strength, latency=latency))
    return spec
