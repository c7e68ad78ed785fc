"""How long the shipped alert rules take to fire at full scale: real minutes, a real
Prometheus (the shipped rules as they are) sending to a real Alertmanager.

    python bench/bench_alerts.py [--scrape 1] [--evaluate 1] [--history 180] [--low 360]

A run (tests/ops/live_workload.py) looks prompts up at ~90 % hits for ``--history``
seconds, then at 0 % (new prompts only) for ``--low`` seconds; a second run sends its
spans to a port where nothing listens (every span is dropped). Prometheus scrapes every
``--scrape`` and evaluates every ``--evaluate`` seconds (the stack's: 5 and 15). Prints
the time from the drop to SwayscopeCacheHitRateDrop's arrival in Alertmanager, and from
the first dropped span (as the run's endpoint served it) to SwayscopeTelemetryLoss's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "ops"))

import ops_servers as srv  # noqa: E402 - found through the paths above

WORKLOAD = REPO / "tests" / "ops" / "live_workload.py"


def first_dropped(url: str, stop: threading.Event) -> float | None:
    while not stop.wait(0.1):
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("swayscope_spans_dropped_total") and float(line.split()[-1]):
                return time.monotonic()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrape", type=float, default=1.0, help="scrape interval (s)")
    parser.add_argument("--evaluate", type=float, default=1.0, help="rule evaluation (s)")
    parser.add_argument("--history", type=float, default=180.0)
    parser.add_argument("--low", type=float, default=360.0)
    args = parser.parse_args()
    procs = srv.Processes()
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            alertmanager = srv.start_alertmanager(procs, tmp)
            drop_port, loss_port = srv.free_port(), srv.free_port()
            srv.start_prometheus(
                procs, tmp, targets=[f"127.0.0.1:{drop_port}", f"127.0.0.1:{loss_port}"],
                alertmanager=alertmanager, scrape_s=args.scrape, evaluate_s=args.evaluate,
            )
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                dead = s.getsockname()[1]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            drop = procs.start(
                [sys.executable, str(WORKLOAD), "--port", str(drop_port), "--phases",
                 f"high:{args.history},low:{args.low}"], tmp / "drop.log", env=env,
                stdout=subprocess.PIPE,
            )
            procs.start(
                [sys.executable, str(WORKLOAD), "--port", str(loss_port), "--phases",
                 f"high:{args.history + args.low}", "--otlp-endpoint",
                 f"http://127.0.0.1:{dead}"], tmp / "loss.log", env=env,
            )
            drops: list[float | None] = []
            fired: dict[str, float] = {}

            def poll() -> None:
                while not stop.wait(0.25):
                    try:
                        active = alertmanager.active()
                    except OSError:
                        continue
                    for alert in active:
                        fired.setdefault(alert["labels"]["alertname"], time.monotonic())

            watchers = [
                threading.Thread(target=lambda: drops.append(
                    first_dropped(f"http://127.0.0.1:{loss_port}/metrics", stop)), daemon=True),
                threading.Thread(target=poll, daemon=True),
            ]
            for watcher in watchers:
                watcher.start()
            assert drop.stdout is not None
            dropped_at = None
            for raw in drop.stdout:
                if raw.decode().startswith("phase 1"):
                    dropped_at = time.monotonic()
                    break
            assert dropped_at is not None
            deadline = dropped_at + args.low
            while len(fired) < 2 and time.monotonic() < deadline:
                time.sleep(0.25)
            stop.set()
            for watcher in watchers:
                watcher.join(5)
            print(f"scrape every {args.scrape:g} s, evaluation every {args.evaluate:g} s; the "
                  f"drop came {args.history:g} s into its run")
            if "SwayscopeCacheHitRateDrop" in fired:
                print("SwayscopeCacheHitRateDrop: "
                      f"{fired['SwayscopeCacheHitRateDrop'] - dropped_at:.1f} s after the drop")
            if "SwayscopeTelemetryLoss" in fired and drops and drops[0] is not None:
                print("SwayscopeTelemetryLoss: "
                      f"{fired['SwayscopeTelemetryLoss'] - drops[0]:.1f} s after the first "
                      "dropped span")
            print(f"all alerts that arrived: {sorted(fired)}")
        finally:
            stop.set()
            procs.stop_all()


if __name__ == "__main__":
    main()
