"""A swayscope run for the live alert tests, driven through the Python API in its own process
(so a test can SIGSTOP or SIGKILL it): phases of cache lookups at a steady rate.

    python live_workload.py --port 9464 --phases high:10,low:14,high:10
    python live_workload.py --pushgateway http://127.0.0.1:9091 --push-interval 0.25 ...

Phases (each ``kind:seconds``, one probe each):
    high   revisits a pool of 20 prompts, one new prompt in 10: ~90 % hits once warm
    low    a new prompt every time: 0 % hits (and evictions once the cache is full)
    hang   one model call that does not return for the phase's length

Prints ``running`` when the run has started, ``phase N KIND`` as each phase begins and
``done`` when it ended.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time

from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.exporter import Exporter
from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

POOL = 20


def _compute() -> float:
    return 1.0


def _hang(seconds: float) -> float:
    time.sleep(seconds)
    return 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--pushgateway", default=None)
    parser.add_argument("--push-interval", type=float, default=10.0)
    parser.add_argument("--otlp-endpoint", default=None)
    parser.add_argument("--phases", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="lookups per second")
    parser.add_argument("--cache-size", type=int, default=64)
    args = parser.parse_args()

    exporters: list[Exporter] = [
        PrometheusExporter(
            port=args.port, pushgateway_url=args.pushgateway, push_interval_s=args.push_interval
        )
    ]
    if args.otlp_endpoint:
        from swayscope.instrumentation.exporters.otel import OtelExporter

        exporters.append(OtelExporter(endpoint=args.otlp_endpoint))
    phases = [(kind, float(sec)) for kind, sec in (p.split(":") for p in args.phases.split(","))]
    inst = BackendInstrumentation(exporters=exporters, cache_maxsize=args.cache_size)
    fresh = itertools.count()
    with inst.run(suite="live", probes=[f"{i}-{kind}" for i, (kind, _) in enumerate(phases)]):
        print("running", flush=True)
        for i, (kind, seconds) in enumerate(phases):
            print(f"phase {i} {kind}", flush=True)
            with inst.probe(f"{i}-{kind}"), inst.view("base"):
                if kind == "hang":
                    hang = functools.partial(_hang, seconds)
                    inst.cached("next_token_dist", "base", "hung prompt", 8, hang)
                    continue
                end = time.monotonic() + seconds
                for n in itertools.count():
                    if time.monotonic() >= end:
                        break
                    if kind == "high" and n % 10:
                        prompt = f"pool {n % POOL}"
                    else:
                        prompt = f"fresh {next(fresh)}"
                    inst.cached("next_token_dist", "base", prompt, 8, _compute)
                    time.sleep(1.0 / args.rate)
    print("done", flush=True)
    inst.close()


if __name__ == "__main__":
    main()
