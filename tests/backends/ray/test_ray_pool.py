"""A pool of Ray workers behind the driver's one cache: the same numbers and cache counts as
one process, every miss computed once, parts overlapping, a lost worker's part retried.

One workload (every view kind, batched and single lookups, greedy generations, repeats
that must hit) runs
in process, on one worker and on two; the module computes it once per backend and the
tests read the outcome.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from sway_testing import Recorder

from swayscope.backends.api import Generation
from swayscope.instrumentation import (
    BackendInstrumentation,
    ForwardCall,
    WorkerCallEnded,
    WorkerFailed,
    WorkerLoad,
    WorkerStatus,
)
from swayscope.instrumentation.vocabulary import EVENT_WORKER_LOST

if TYPE_CHECKING:
    from swayscope.backends.ray import RayBackend
    from swayscope.backends.tiny import TinyModelPaths

TOP_K = 16
#: Lookups compared across backends: the cache counts of each run are compared too.
SHARED = "In the old town by the river the baker opens his shop before dawn and "
PROMPTS = [SHARED + f"sells loaf number {i}" + " and more" * (i % 5) for i in range(12)] + [
    f"Unrelated prompt {i}: " + "word " * (3 + 2 * i) for i in range(12)
]
TEXTS = [p + " then closes at noon." for p in PROMPTS[::3]]
#: Values of the records the driver compares (a rolling logprob's, a distribution's).
STAT_KEYS = (
    "cache_hits", "cache_misses", "forward_passes", "batched_prompts", "n_tokens",
    "forward_calls", "batches_sent", "max_batch_size", "compute_errors",
)


def workload(backend: Any) -> dict[str, list[Any]]:
    """Every view kind, batched and single lookups, and repeats (which must be hits)."""
    out: dict[str, list[Any]] = {}
    with backend.base() as view:
        out["base"] = view.next_token_dist_batch(PROMPTS, top_k=TOP_K)
    with backend.ft() as view:
        out["ft"] = view.next_token_dist_batch(PROMPTS + PROMPTS[:4], top_k=TOP_K)
        out["ft_rolling"] = view.rolling_logprob_batch(TEXTS)
        out["ft_single"] = [view.next_token_dist("A single lookup, alone.", top_k=TOP_K)]
        out["ft_again"] = view.next_token_dist_batch(PROMPTS[::2], top_k=TOP_K)
        out["ft_generate"] = view.generate_batch(PROMPTS[::2], max_new_tokens=6, stop=["\n"])
    with backend.scaled(0.5) as view:
        out["scaled"] = view.next_token_dist_batch(PROMPTS, top_k=TOP_K)
    with backend.null(7) as view:
        out["null"] = view.next_token_dist_batch(PROMPTS, top_k=TOP_K)
        out["null_logprob"] = view.logprob_of_batch([(p, " fresh bread") for p in PROMPTS[:6]])
        out["null_generate"] = view.generate_batch(PROMPTS[:6], max_new_tokens=6)
    with backend.null(7) as view:
        out["null_again"] = view.next_token_dist_batch(PROMPTS[:8], top_k=TOP_K)
    return out


def assert_same_values(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert len(got[key]) == len(want[key]), key
        for i, (g, w) in enumerate(zip(got[key], want[key], strict=True)):
            where = f"{key}[{i}]"
            if isinstance(w, float):
                assert abs(g - w) <= 1e-4, where
                continue
            if isinstance(w, Generation):
                assert g == w, where
                continue
            assert np.array_equal(g.token_ids, w.token_ids), where
            np.testing.assert_allclose(g.logprobs, w.logprobs, atol=1e-4, err_msg=where)
            if hasattr(w, "tail_logprob"):
                assert abs(g.tail_logprob - w.tail_logprob) <= 1e-4, where


@dataclass
class Outcome:
    values: dict[str, list[Any]]
    stats: dict[str, Any]
    events: list[Any]
    texts_per_worker: list[int]
    metrics: str


def pool_backend(tiny_model: TinyModelPaths, workers: int, **kwargs: Any) -> RayBackend:
    from swayscope.backends.ray import RayBackend

    return RayBackend(
        tiny_model.base_dir, tiny_model.adapter_dir, workers=workers, device="cpu",
        threads=1, **kwargs,
    )


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def run_on(make: Callable[[BackendInstrumentation], Any]) -> Outcome:
    """The workload in a run, with a recorder and a live metrics endpoint scraped at its end."""
    from swayscope.instrumentation.exporters.prometheus import PrometheusExporter

    recorder = Recorder()
    prom = PrometheusExporter(port=0)
    inst = BackendInstrumentation(exporters=[recorder, prom])
    backend = make(inst)
    try:
        with inst.run(suite="ray-pool", total_probes=1), inst.probe("workload", "delta_kl"):
            values = workload(backend)
            assert prom.url is not None
            metrics = _scrape(prom.url)
        pool = getattr(backend, "pool", None)
        texts = [c["texts"] for c in pool.counters()] if pool is not None else []
        return Outcome(values, inst.stats.to_dict(), list(recorder.events), texts, metrics)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def in_process(tiny_model: TinyModelPaths) -> Outcome:
    from swayscope.backends.hf import HFBackend

    return run_on(
        lambda inst: HFBackend(
            tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", threads=1, inst=inst
        )
    )


@pytest.fixture(scope="module")
def one_worker(ray_address: str, tiny_model: TinyModelPaths) -> Outcome:
    return run_on(lambda inst: pool_backend(tiny_model, 1, inst=inst))


@pytest.fixture(scope="module")
def two_workers(ray_address: str, tiny_model: TinyModelPaths) -> Outcome:
    return run_on(lambda inst: pool_backend(tiny_model, 2, inst=inst))


def test_one_and_two_workers_give_the_in_process_numbers(
    in_process: Outcome, one_worker: Outcome, two_workers: Outcome
) -> None:
    assert_same_values(one_worker.values, in_process.values)
    assert_same_values(two_workers.values, in_process.values)


def test_the_driver_cache_counts_as_in_process(
    in_process: Outcome, one_worker: Outcome, two_workers: Outcome
) -> None:
    want = {k: in_process.stats[k] for k in STAT_KEYS}
    assert want["cache_hits"] > 0 and want["cache_misses"] > 0
    for outcome in (one_worker, two_workers):
        assert {k: outcome.stats[k] for k in STAT_KEYS} == want
        assert outcome.stats["worker_failures"] == 0


def test_every_miss_is_computed_once_across_the_pool(two_workers: Outcome) -> None:
    texts = two_workers.texts_per_worker
    assert sum(texts) == two_workers.stats["cache_misses"]
    assert all(n > 0 for n in texts), texts  # both workers took parts
    calls = [e for e in two_workers.events if isinstance(e, ForwardCall)]
    assert sum(c.cache_misses for c in calls) == two_workers.stats["cache_misses"]


def test_parts_of_a_call_run_at_the_same_time(two_workers: Outcome) -> None:
    """Every part of a call is sent before any comes back: both workers hold one at once."""
    in_flight: dict[str, int] = {}
    both = False
    for event in two_workers.events:
        if isinstance(event, WorkerLoad):
            in_flight[event.worker] = event.in_flight
            both = both or all(in_flight.get(w, 0) > 0 for w in ("0", "1"))
    assert both
    ended = [e for e in two_workers.events if isinstance(e, WorkerCallEnded)]
    assert {e.worker for e in ended} == {"0", "1"}
    big = [e for e in ended if e.batch_size >= 5]
    assert big and all(e.n_tokens > 0 and e.memory_bytes > 0 for e in big)


def test_the_split_balances_tokens(two_workers: Outcome) -> None:
    """The first call (24 prompts of 8 to 40 tokens) is shared about evenly by tokens."""
    ended = [e for e in two_workers.events if isinstance(e, WorkerCallEnded)]
    first_two = {e.worker: e.n_tokens for e in ended[:2]}
    assert set(first_two) == {"0", "1"}
    low, high = sorted(first_two.values())
    assert high <= 1.6 * low, first_two


def test_per_worker_metrics_are_scraped(two_workers: Outcome) -> None:
    text = two_workers.metrics
    for worker in ("0", "1"):
        label = f'{{worker="{worker}"}}'
        assert f"swayscope_worker_up{label} 1.0" in text
        count = _sample(text, f"swayscope_worker_forward_duration_seconds_count{label}")
        assert count > 0, worker
        assert _sample(text, f"swayscope_worker_tokens_total{label}") > 0
        assert _sample(text, f"swayscope_worker_busy_seconds_total{label}") > 0
        assert _sample(text, f"swayscope_worker_memory_bytes{label}") > 0
        assert _sample(text, f"swayscope_worker_failures_total{label}") == 0
    assert 'worker="2"' not in text


def _sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"no sample {series} in the scrape")


def test_null_adapters_are_built_alike_on_every_worker_and_close_stops_them(
    ray_address: str, tiny_model: TinyModelPaths
) -> None:
    from swayscope.backends.hf import HFBackend

    local = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", threads=1)
    backend = pool_backend(tiny_model, 2)
    pids = backend.pool.pids()
    try:
        want = local.null_tensors(3, init_scale=0.5)
        for worker in range(2):
            got = backend.pool.null_tensors(3, 0.5, 1.0, worker=worker)
            assert got.keys() == want.keys()
            for name in want:
                assert bool((got[name] == want[name]).all()), (worker, name)
    finally:
        backend.close()
        local.close()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    assert not alive, f"worker processes {alive} outlived the pool"


class KillWorkerOne(Recorder):
    """Kills worker 1's process (SIGKILL) right after the first part is sent to it: the
    part is lost with the worker, whatever it was doing."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.killed = False

    def export(self, event: Any) -> None:
        super().export(event)
        if (
            not self.killed
            and isinstance(event, WorkerLoad)
            and event.worker == "1"
            and event.in_flight > 0
        ):
            self.killed = True
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def otel_memory() -> Iterator[tuple[Any, Any]]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from swayscope.instrumentation.exporters.otel import OtelExporter

    mem = InMemorySpanExporter()
    exporter = OtelExporter(span_exporter=mem, batch=False)
    yield exporter, mem


def test_a_worker_killed_mid_run_is_retried_on_the_other(
    ray_address: str, tiny_model: TinyModelPaths, in_process: Outcome,
    otel_memory: tuple[Any, Any],
) -> None:
    exporter, mem = otel_memory
    inst = BackendInstrumentation(exporters=[exporter])
    backend = pool_backend(tiny_model, 2, inst=inst)
    killer = KillWorkerOne(backend.pool.pids()[1])
    inst.add_exporter(killer)
    try:
        with inst.run(suite="kill", total_probes=1), inst.probe("workload", "delta_kl"):
            values = workload(backend)
        assert killer.killed
        assert_same_values(values, in_process.values)
        stats = inst.stats.to_dict()
        assert {k: stats[k] for k in STAT_KEYS} == {k: in_process.stats[k] for k in STAT_KEYS}
        assert stats["worker_failures"] >= 1
        failed = [e for e in killer.events if isinstance(e, WorkerFailed)]
        assert failed and failed[0].worker == "1"
        down = [e for e in killer.events if isinstance(e, WorkerStatus) and not e.up]
        assert [e.worker for e in down][:1] == ["1"]
        assert backend.workers["failures"] == stats["worker_failures"]
        # Every miss was computed: the lost part on worker 0, later ones where Ray restarted.
        assert sum(c.cache_misses for c in killer.calls()) == stats["cache_misses"]
    finally:
        backend.close()
    forwards = [s for s in mem.get_finished_spans() if s.name == "swayscope.forward"]
    lost = [ev for s in forwards for ev in s.events if ev.name == EVENT_WORKER_LOST]
    assert lost and lost[0].attributes["swayscope.worker"] == "1"
    assert lost[0].attributes["swayscope.worker.retried_on"] == "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
