"""Live: the shipped alert rules, evaluated by a real Prometheus that sends to a real
Alertmanager, against real runs (the Python API in child processes, see live_workload.py).

The rules file is the shipped one with every window, offset and ``for:`` divided by 60
(``[10m]`` → ``[10s]``, ``[1h]`` → ``[1m]``, ``for: 3m`` → ``for: 3s``); Prometheus scrapes
and evaluates every second. Six runs start together:

- healthy: ~90 % hits to its end, then exits after Prometheus saw its final values;
- drop: ~90 %, then 0 % (new prompts, evictions), then ~90 % again;
- hung: one model call that does not return for 16 s;
- frozen: SIGSTOPped mid-run (later killed);
- pushed: pushes to a Pushgateway every 0.25 s, SIGKILLed mid-run;
- collector: sends spans to a port where nothing listens.

Alertmanager's ``/api/v2/alerts`` is polled the whole time: each expected alert arrives,
the drop alert stays while the ratio is down and resolves when it recovers, and no other
alert arrives — none for the healthy run, during it or at its end (Prometheus' ALERTS
series shows it was never even pending). About 45 s in all.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ops_servers as srv
import pytest

from swayscope.instrumentation.exporters.prometheus import default_push_instance

pytestmark = pytest.mark.server

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "live_workload.py"
DROP = "SwayscopeCacheHitRateDrop"
STALLED = "SwayscopeRunStalled"
LOSS = "SwayscopeTelemetryLoss"

_WINDOW = re.compile(r"(\[|offset |for: )(\d+)([mh])\b")


def _shorter(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{'s' if match.group(3) == 'm' else 'm'}"


def shortened_rules(text: str) -> str:
    """``text`` with every range window, offset and ``for:`` divided by 60 (m → s, h → m)."""
    out, n = _WINDOW.subn(_shorter, text)
    assert n >= 20, f"only {n} windows found in the rules: did their syntax change?"
    return out


def test_shortening_changes_only_windows() -> None:
    text = "rate(x[5m]) > y offset 1h\n  for: 10m\nsummary: 'for 10 minutes' # [1d]\n"
    assert _WINDOW.sub(_shorter, text) == (
        "rate(x[5s]) > y offset 1m\n  for: 10s\nsummary: 'for 10 minutes' # [1d]\n"
    )


@dataclass
class Run:
    """One workload process and when its run started and ended (monotonic seconds)."""

    name: str
    proc: subprocess.Popen[bytes]
    instance: str
    running_at: float | None = None
    done_at: float | None = None

    def started(self) -> float:
        return srv.wait_until(lambda: self.running_at, 30, f"run {self.name} to start")

    def follow(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line == "running":
                self.running_at = time.monotonic()
            elif line == "done":
                self.done_at = time.monotonic()


@dataclass
class Stack:
    prometheus: srv.Prometheus
    alertmanager: srv.Alertmanager
    runs: dict[str, Run]
    #: (alertname, instance, loss) → [first seen, last seen] active in Alertmanager.
    seen: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    descriptions: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def poll_alertmanager(self, stop: threading.Event) -> None:
        while not stop.wait(0.25):
            try:
                active = self.alertmanager.active()
            except OSError:
                continue
            now = time.monotonic()
            for alert in active:
                labels = alert["labels"]
                key = (labels["alertname"], labels.get("instance", ""), labels.get("loss", ""))
                self.seen.setdefault(key, [now, now])[1] = now
                self.descriptions[key] = alert["annotations"].get("description", "")

    def arrived(self, alertname: str, run: str, timeout_s: float) -> tuple[str, str, str]:
        instance = self.runs[run].instance

        def found() -> tuple[str, str, str] | None:
            return next(
                (k for k in self.seen if k[0] == alertname and k[1] == instance), None
            )

        return srv.wait_until(found, timeout_s, f"{alertname} for the {run} run in Alertmanager")

    def alerts_state(self, alertname: str, run: str) -> set[str]:
        instance = self.runs[run].instance
        result = self.prometheus.query(f'ALERTS{{alertname="{alertname}", instance="{instance}"}}')
        return {r["metric"]["alertstate"] for r in result}


def _driver(stack: Stack, stop: threading.Event) -> None:
    """SIGSTOP the frozen run 6 s into its run (SIGKILL it 10 s later); SIGKILL the pushed
    run 5 s into its run: their stalls happen mid-run, whatever the start-up took."""
    frozen, pushed = stack.runs["frozen"], stack.runs["pushed"]
    actions = [
        (frozen, 6.0, lambda: os.kill(frozen.proc.pid, signal.SIGSTOP)),
        (pushed, 5.0, pushed.proc.kill),
        (frozen, 16.0, frozen.proc.kill),
    ]
    for run, after, act in actions:
        started = srv.wait_until(lambda run=run: run.running_at, 30, f"{run.name} to start")
        if stop.wait(max(0.0, started + after - time.monotonic())):
            return
        act()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerts-live")
    procs = srv.Processes()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        rules = tmp / "swayscope.rules.yml"
        rules.write_text(shortened_rules(srv.RULES.read_text(encoding="utf-8")))
        alertmanager = srv.start_alertmanager(procs, tmp)
        pushgateway = srv.start_pushgateway(procs, tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # closed again at once: nothing listens there
        scraped = {
            "healthy": ["--phases", "high:24"],
            "drop": ["--phases", "high:12,low:14,high:12"],
            "hung": ["--phases", "high:4,hang:16"],
            "frozen": ["--phases", "high:40"],
            "collector": ["--phases", "high:24", "--otlp-endpoint", f"http://127.0.0.1:{dead}"],
        }
        ports = {name: srv.free_port() for name in scraped}
        prometheus = srv.start_prometheus(
            procs, tmp, rules=rules, pushgateway=pushgateway, alertmanager=alertmanager,
            targets=[f"127.0.0.1:{port}" for port in ports.values()],
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        runs: dict[str, Run] = {}
        for name, args in [
            *[(n, ["--port", str(ports[n]), *a]) for n, a in scraped.items()],
            ("pushed", ["--pushgateway", pushgateway, "--push-interval", "0.25",
                        "--phases", "high:40"]),
        ]:
            proc = procs.start(
                [sys.executable, str(WORKLOAD), *args], tmp / f"{name}.log", env=env,
                stdout=subprocess.PIPE,
            )
            instance = (
                f"127.0.0.1:{ports[name]}" if name in ports
                else f"{default_push_instance().rsplit(':', 1)[0]}:{proc.pid}"
            )
            runs[name] = Run(name, proc, instance)
        result = Stack(prometheus, alertmanager, runs)
        threads = [
            *(threading.Thread(target=run.follow, daemon=True) for run in runs.values()),
            threading.Thread(target=result.poll_alertmanager, args=(stop,), daemon=True),
            threading.Thread(target=_driver, args=(result, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        yield result
    finally:
        stop.set()
        procs.stop_all()
        for thread in threads:
            thread.join(5)


def test_hit_rate_drop_fires_stays_while_down_and_resolves(stack: Stack) -> None:
    run = stack.runs["drop"]
    t0 = run.started()
    key = stack.arrived(DROP, "drop", t0 + 27 - time.monotonic())
    first_seen = stack.seen[key][0]
    assert first_seen > t0 + 12, "fired before the ratio dropped"
    assert first_seen < t0 + 12 + 12, "took more than 12 s (12 min at full scale) to fire"
    # Still firing late in the low phase.
    srv.wait_until(lambda: time.monotonic() > t0 + 24.5, 30, "the end of the low phase")
    assert stack.alerts_state(DROP, "drop") == {"firing"}
    assert stack.seen[key][1] > t0 + 23
    # Resolved once the ratio recovered (from t0 + 26).
    srv.wait_until(
        lambda: not stack.alerts_state(DROP, "drop")
        and not any(a["labels"]["alertname"] == DROP for a in stack.alertmanager.active()),
        t0 + 38 - time.monotonic(), "the drop alert to resolve",
    )
    assert time.monotonic() > t0 + 26


def test_run_stalled_fires_for_a_hung_call_a_frozen_process_and_stopped_pushes(
    stack: Stack,
) -> None:
    expected = {
        "hung": ("hangs", 26),
        "frozen": ("frozen or gone", 16),
        "pushed": ("stopped pushing", 16),
    }
    for name, (words, within_s) in expected.items():
        t0 = stack.runs[name].started()
        key = stack.arrived(STALLED, name, t0 + within_s - time.monotonic())
        assert words in stack.descriptions[key], stack.descriptions[key]


def test_telemetry_loss_fires_for_a_dead_collector(stack: Stack) -> None:
    t0 = stack.runs["collector"].started()
    key = stack.arrived(LOSS, "collector", t0 + 20 - time.monotonic())
    assert key[2] == "spans_dropped"
    assert "spans dropped" in stack.descriptions[key]


def test_a_healthy_run_and_its_end_raise_nothing_and_only_the_expected_alerts_arrive(
    stack: Stack,
) -> None:
    healthy = stack.runs["healthy"]
    srv.wait_until(lambda: healthy.proc.poll() is not None, 60, "the healthy run to exit")
    assert healthy.proc.returncode == 0 and healthy.done_at is not None
    # Watch past its end: the windows (5 s), the stall checks (10 s) and their for:.
    srv.wait_until(lambda: time.monotonic() > healthy.done_at + 12, 30, "time to pass")
    where = f'instance="{healthy.instance}"'
    hits = stack.prometheus.scalar(f"sum(max_over_time(swayscope_cache_hits_total{{{where}}}[2m]))")
    assert (hits or 0) > 500  # it was scraped the whole time
    # Prometheus saw its final values: the last run_active sample is 0.
    assert stack.prometheus.scalar(f"last_over_time(swayscope_run_active{{{where}}}[2m])") == 0
    assert stack.prometheus.query(f"ALERTS{{{where}}}[2m]") == []  # never even pending
    for run in stack.runs.values():
        srv.wait_until(lambda run=run: run.proc.poll() is not None, 60, f"{run.name} to exit")
    got = {(name, inst) for name, inst, _ in stack.seen}
    runs = stack.runs
    expected = {
        (DROP, runs["drop"].instance),
        (STALLED, runs["hung"].instance),
        (STALLED, runs["frozen"].instance),
        (STALLED, runs["pushed"].instance),
        (LOSS, runs["collector"].instance),
    }
    assert got == expected, (sorted(got), sorted(expected), stack.descriptions)
