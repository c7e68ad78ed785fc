"""Live: the shipped alert rules, evaluated by a real Prometheus that sends to a real
Alertmanager, against real runs (the Python API in child processes, see live_workload.py).

The rules file is the shipped one with every window, offset and ``for:`` divided by 20
(``[1m]`` → ``[3s]``, ``[1h]`` → ``[3m]``, ``for: 2m`` → ``for: 6s``); Prometheus scrapes
and evaluates every second, so one rule minute is three seconds here and a scrape or an
evaluation is a third of a rule minute, as 20 s would be at full scale. Runs start
together:

- healthy: ~90 % hits to its end, then exits after Prometheus saw its final values;
- drop: ~90 % for 3 rule minutes, then 0 % (new prompts, evictions), then ~90 % again;
- hung: one model call that does not return for 13 rule minutes;
- frozen: SIGSTOPped mid-run (later killed);
- pushed: pushes to a Pushgateway every 0.25 s, SIGKILLed mid-run;
- collector: sends spans to a port where nothing listens (every span is dropped); when it
  has ended, the next run on its port sends them to a collector that takes them. These
  two are watched by a second Prometheus with the shipped rules as they are (1 s scrape
  and evaluation): the exporter drops spans in bursts every ~8 s, whatever the scale,
  which a loss window divided by 20 (3 s) would not see as continuous.

Alertmanager's ``/api/v2/alerts`` is polled the whole time: each expected alert arrives,
the drop alert stays while the ratio is down and resolves when it recovers, the loss
alert ends with its run and stays away while the next run delivers, and no other alert
arrives — none for the healthy run, during it or at its end (Prometheus' ALERTS series
shows it was never even pending). The time from the drop (and from the first dropped
span) to the alert's arrival in Alertmanager is measured and printed, in seconds here
and in rule minutes (``pytest -s`` shows them; docs/runbook.md states them). About two
minutes in all.
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
import urllib.request
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

#: Seconds of this test per minute of the rules (the rules' windows divided by 20).
MINUTE_S = 3.0
#: The collector run and the next one (shipped rules: real minutes).
COLLECTOR_RUN_S = 100.0
NEXT_RUN_S = 20.0
_WINDOW = re.compile(r"(\[|offset |for: )(\d+)([mh])\b")


def _shorter(match: re.Match[str]) -> str:
    n = int(match.group(2)) * MINUTE_S
    return f"{match.group(1)}{n:g}{'s' if match.group(3) == 'm' else 'm'}"


def shortened_rules(text: str) -> str:
    """``text`` with every range window, offset and ``for:`` divided by 20 (``Nm`` → ``3N``
    seconds, ``Nh`` → ``3N`` minutes)."""
    out, n = _WINDOW.subn(_shorter, text)
    assert n >= 20, f"only {n} windows found in the rules: did their syntax change?"
    return out


def test_shortening_changes_only_windows() -> None:
    text = "rate(x[5m]) > y offset 1h\n  for: 10m\nsummary: 'for 10 minutes' # [1d]\n"
    assert _WINDOW.sub(_shorter, text) == (
        "rate(x[15s]) > y offset 3m\n  for: 30s\nsummary: 'for 10 minutes' # [1d]\n"
    )


def rule_minutes(seconds: float) -> float:
    return seconds / MINUTE_S


@dataclass
class Run:
    """One workload process and when its run started, each phase began and it ended
    (monotonic seconds)."""

    name: str
    proc: subprocess.Popen[bytes]
    instance: str
    running_at: float | None = None
    phases: dict[int, float] = field(default_factory=dict)
    done_at: float | None = None

    def started(self) -> float:
        return srv.wait_until(lambda: self.running_at, 30, f"run {self.name} to start")

    def phase(self, index: int) -> float:
        return srv.wait_until(
            lambda: self.phases.get(index), 120, f"phase {index} of run {self.name}"
        )

    def follow(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            now = time.monotonic()
            if line == "running":
                self.running_at = now
            elif line.startswith("phase "):
                self.phases[int(line.split()[1])] = now
            elif line == "done":
                self.done_at = now


@dataclass
class Stack:
    prometheus: srv.Prometheus
    alertmanager: srv.Alertmanager
    runs: dict[str, Run]
    #: (alertname, instance, loss) → every time it was seen active in Alertmanager.
    seen: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    descriptions: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: When the collector run's endpoint first served a dropped span.
    first_drop_at: float | None = None

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
                self.seen.setdefault(key, []).append(now)
                self.descriptions[key] = alert["annotations"].get("description", "")

    def watch_drops(self, url: str, stop: threading.Event) -> None:
        """Scrape the collector run's endpoint until it shows a dropped span."""
        while not stop.wait(0.1) and self.first_drop_at is None:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("swayscope_spans_dropped_total") and float(line.split()[-1]):
                    self.first_drop_at = time.monotonic()

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


def _report(what: str, seconds: float) -> None:
    print(f"\n{what}: {seconds:.1f} s here, {rule_minutes(seconds):.1f} rule minutes")


def _driver(stack: Stack, stop: threading.Event, start_next: threading.Event) -> None:
    """SIGSTOP the frozen run 2 rule minutes into its run (SIGKILL it 3 later); SIGKILL the
    pushed run 2 rule minutes into its run: their stalls happen mid-run, whatever the
    start-up took. Start the collector's next run once the collector's has ended."""
    frozen, pushed = stack.runs["frozen"], stack.runs["pushed"]
    actions = [
        (pushed, 2 * MINUTE_S, pushed.proc.kill),
        (frozen, 2 * MINUTE_S, lambda: os.kill(frozen.proc.pid, signal.SIGSTOP)),
        (frozen, 5 * MINUTE_S, frozen.proc.kill),
    ]
    for run, after, act in actions:
        started = srv.wait_until(lambda run=run: run.running_at, 30, f"{run.name} to start")
        if stop.wait(max(0.0, started + after - time.monotonic())):
            return
        act()
    collector = stack.runs["collector"]
    while collector.proc.poll() is None:
        if stop.wait(0.1):
            return
    start_next.set()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alerts-live")
    procs = srv.Processes()
    stop = threading.Event()
    start_next = threading.Event()
    threads: list[threading.Thread] = []
    sink = srv.OtlpSink()
    try:
        rules = tmp / "swayscope.rules.yml"
        rules.write_text(shortened_rules(srv.RULES.read_text(encoding="utf-8")))
        alertmanager = srv.start_alertmanager(procs, tmp)
        pushgateway = srv.start_pushgateway(procs, tmp)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # closed again at once: nothing listens there
        minutes = {"healthy": 12, "drop": 3, "low": 8, "high": 6, "hang": 13, "frozen": 13}
        seconds = {k: v * MINUTE_S for k, v in minutes.items()}
        scraped = {
            "healthy": ["--phases", f"high:{seconds['healthy']}"],
            "drop": ["--phases", f"high:{seconds['drop']},low:{seconds['low']},"
                                 f"high:{seconds['high']}"],
            "hung": ["--phases", f"high:4,hang:{seconds['hang']}"],
            "frozen": ["--phases", f"high:{seconds['frozen']}"],
            # Real minutes: until the loss alert fired (about 70 s in), then the next run.
            "collector": ["--phases", f"high:{COLLECTOR_RUN_S}", "--otlp-endpoint",
                          f"http://127.0.0.1:{dead}"],
        }
        ports = {name: srv.free_port() for name in scraped}
        prometheus = srv.start_prometheus(
            procs, tmp, rules=rules, pushgateway=pushgateway, alertmanager=alertmanager,
            targets=[f"127.0.0.1:{port}" for name, port in ports.items() if name != "collector"],
        )
        srv.start_prometheus(
            procs, tmp, alertmanager=alertmanager, targets=[f"127.0.0.1:{ports['collector']}"],
            external_labels={"rules": "shipped"},
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        def start(name: str, args: list[str], instance: str | None = None) -> Run:
            proc = procs.start(
                [sys.executable, str(WORKLOAD), *args], tmp / f"{name}.log", env=env,
                stdout=subprocess.PIPE,
            )
            where = instance or f"{default_push_instance().rsplit(':', 1)[0]}:{proc.pid}"
            run = Run(name, proc, where)
            thread = threading.Thread(target=run.follow, daemon=True)
            thread.start()
            threads.append(thread)
            return run

        runs = {
            name: start(name, ["--port", str(ports[name]), *args], f"127.0.0.1:{ports[name]}")
            for name, args in scraped.items()
        }
        runs["pushed"] = start("pushed", ["--pushgateway", pushgateway, "--push-interval",
                                          "0.25", "--phases", f"high:{seconds['frozen']}"])
        result = Stack(prometheus, alertmanager, runs)
        for target, args in [
            (result.poll_alertmanager, (stop,)),
            (_driver, (result, stop, start_next)),
            (result.watch_drops, (f"http://127.0.0.1:{ports['collector']}/metrics", stop)),
        ]:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            threads.append(thread)
        assert start_next.wait(120), "the collector run did not end"
        runs["next"] = start("next", [
            "--port", str(ports["collector"]), "--phases", f"high:{NEXT_RUN_S}",
            "--otlp-endpoint", sink.url,
        ], f"127.0.0.1:{ports['collector']}")
        yield result
    finally:
        stop.set()
        procs.stop_all()
        sink.close()
        for thread in threads:
            thread.join(5)


def test_hit_rate_drop_fires_within_5_rule_minutes_stays_while_down_and_resolves(
    stack: Stack,
) -> None:
    run = stack.runs["drop"]
    dropped = run.phase(1)  # the low phase, 3 rule minutes into the run
    recovered = run.phase(2)
    key = stack.arrived(DROP, "drop", dropped + 8 * MINUTE_S - time.monotonic())
    first_seen = stack.seen[key][0]
    _report("SwayscopeCacheHitRateDrop fired after the drop", first_seen - dropped)
    assert first_seen > dropped, "fired before the ratio dropped"
    assert first_seen - dropped < 5 * MINUTE_S, "took more than 5 rule minutes to fire"
    # Still firing late in the low phase.
    assert stack.seen[key][-1] > recovered - MINUTE_S
    # Resolved once the ratio recovered (from the high phase on).
    srv.wait_until(
        lambda: not stack.alerts_state(DROP, "drop")
        and not any(a["labels"]["alertname"] == DROP for a in stack.alertmanager.active()),
        recovered + 4 * MINUTE_S - time.monotonic(), "the drop alert to resolve",
    )
    assert time.monotonic() > recovered


def test_run_stalled_fires_for_a_hung_call_a_frozen_process_and_stopped_pushes(
    stack: Stack,
) -> None:
    expected = {
        # hung: the model call hangs from 4 s in; 10 rule minutes without one, then for: 1m
        "hung": ("hangs", 4 + 14 * MINUTE_S),
        # frozen: stopped 2 rule minutes in; its scrape fails at once, then for: 1m
        "frozen": ("frozen or gone", 6 * MINUTE_S),
        # pushed: killed 2 rule minutes in; no push for 2 rule minutes, then for: 1m
        "pushed": ("stopped pushing", 8 * MINUTE_S),
    }
    for name, (words, within_s) in expected.items():
        t0 = stack.runs[name].started()
        key = stack.arrived(STALLED, name, t0 + within_s - time.monotonic())
        assert words in stack.descriptions[key], stack.descriptions[key]


def test_telemetry_loss_fires_within_2_minutes_and_ends_before_the_next_run_delivers(
    stack: Stack,
) -> None:
    """The shipped rules as they are: real minutes."""
    t0 = stack.runs["collector"].started()
    first_drop = srv.wait_until(lambda: stack.first_drop_at, 60, "the first dropped span")
    key = stack.arrived(LOSS, "collector", first_drop + 150 - time.monotonic())
    assert key[2] == "spans_dropped" and "spans dropped" in stack.descriptions[key]
    fired = stack.seen[key][0]
    print(f"\nSwayscopeTelemetryLoss fired {fired - first_drop:.1f} s after the first dropped "
          f"span ({first_drop - t0:.1f} s into the run; shipped rules, 1 s scrape and "
          "evaluation)")
    assert fired - first_drop < 120, "took more than 2 minutes to fire"
    # It ends with its run (its series go), before the next run on the same port, which
    # delivers its spans, and does not come back while that one runs.
    ended = srv.wait_until(lambda: stack.runs["collector"].done_at, 120, "the collector run")
    following = stack.runs["next"]
    began = following.started()
    srv.wait_until(lambda: following.proc.poll() is not None, 120, "the next run to exit")
    last = stack.seen[key][-1]
    print(f"SwayscopeTelemetryLoss last active {last - ended:.1f} s after its run ended; the "
          f"next run began {began - ended:.1f} s after it")
    assert last < began + 2.0, "the loss alert outlived its run into the next one"


def test_a_healthy_run_and_its_end_raise_nothing_and_only_the_expected_alerts_arrive(
    stack: Stack,
) -> None:
    healthy = stack.runs["healthy"]
    srv.wait_until(lambda: healthy.proc.poll() is not None, 120, "the healthy run to exit")
    assert healthy.proc.returncode == 0 and healthy.done_at is not None
    # Watch past its end: the windows (up to 5 rule minutes) and their for: (up to 2).
    srv.wait_until(lambda: time.monotonic() > healthy.done_at + 7 * MINUTE_S, 60,
                   "time to pass")
    where = f'instance="{healthy.instance}"'
    hits = stack.prometheus.scalar(f"sum(max_over_time(swayscope_cache_hits_total{{{where}}}[5m]))")
    assert (hits or 0) > 1000  # it was scraped the whole time
    # Prometheus saw its final values: the last run_active sample is 0.
    assert stack.prometheus.scalar(f"last_over_time(swayscope_run_active{{{where}}}[5m])") == 0
    assert stack.prometheus.query(f"ALERTS{{{where}}}[5m]") == []  # never even pending
    for run in stack.runs.values():
        srv.wait_until(lambda run=run: run.proc.poll() is not None, 120, f"{run.name} to exit")
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
