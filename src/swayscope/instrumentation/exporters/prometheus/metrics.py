"""Names, help texts, labels and buckets of the ``swayscope_*`` metrics: the public contract.

Family names are given without ``_total``: prometheus_client adds it to counters.
"""

from __future__ import annotations

CACHE_HITS = "swayscope_cache_hits"
CACHE_MISSES = "swayscope_cache_misses"
FORWARD_CALLS = "swayscope_forward_calls"
FORWARD_PROMPTS = "swayscope_forward_prompts"
BATCH_SIZE = "swayscope_batch_size"
FORWARD_DURATION = "swayscope_forward_duration_seconds"
CACHE_ENTRIES = "swayscope_cache_entries"
CACHE_BYTES = "swayscope_cache_bytes"
CACHE_EVICTIONS = "swayscope_cache_evictions"
DISK_CACHE_ENTRIES = "swayscope_disk_cache_entries"
DISK_CACHE_BYTES = "swayscope_disk_cache_bytes"
DISK_CACHE_EVICTIONS = "swayscope_disk_cache_evictions"
DISK_CACHE_WRITE_FAILURES = "swayscope_disk_cache_write_failures"
TOKENS = "swayscope_tokens"
PROBE_DURATION = "swayscope_probe_duration_seconds"
PROBES = "swayscope_probes"
PROBE_SCORE = "swayscope_probe_score"
SWEEP_PROGRESS = "swayscope_sweep_progress_ratio"
RUN_INFO = "swayscope_run_info"
RUN_ACTIVE = "swayscope_run_active"
RUN_PROGRESS = "swayscope_run_progress_ratio"
RUN_START_TIME = "swayscope_run_start_time_seconds"
EXPORTER_ERRORS = "swayscope_exporter_errors"
SPANS_DROPPED = "swayscope_spans_dropped"
# A pool of forward workers (``models.workers``), labelled by ``worker``.
WORKER_UP = "swayscope_worker_up"
WORKER_IN_FLIGHT = "swayscope_worker_in_flight_calls"
WORKER_FORWARD_DURATION = "swayscope_worker_forward_duration_seconds"
WORKER_QUEUE_WAIT = "swayscope_worker_queue_wait_seconds"
WORKER_BATCH_SIZE = "swayscope_worker_batch_size"
WORKER_BUSY = "swayscope_worker_busy_seconds"
WORKER_TOKENS = "swayscope_worker_tokens"
WORKER_MEMORY = "swayscope_worker_memory_bytes"
WORKER_DEVICE_MEMORY = "swayscope_worker_device_memory_bytes"
WORKER_FAILURES = "swayscope_worker_failures"

HELP: dict[str, str] = {
    CACHE_HITS: "Cache lookups served from the cache, by tier (memory, or the disk cache).",
    CACHE_MISSES: "Cache lookups that needed the model (calls that raised included).",
    FORWARD_CALLS: "Model calls (a batch is one).",
    FORWARD_PROMPTS: "Prompts sent to the model.",
    BATCH_SIZE: "Prompts per model call.",
    FORWARD_DURATION: "Wall time of one model call.",
    CACHE_ENTRIES: "Entries in the forward cache.",
    CACHE_BYTES: "Approximate bytes held by the forward cache.",
    CACHE_EVICTIONS: "Entries evicted from the forward cache.",
    DISK_CACHE_ENTRIES: "Entries in the durable disk cache file.",
    DISK_CACHE_BYTES: "Bytes of values in the durable disk cache file.",
    DISK_CACHE_EVICTIONS: "Entries evicted from the disk cache file (by every process using it).",
    DISK_CACHE_WRITE_FAILURES: "Entries this process could not write to the disk cache "
    "(a full disk: the run goes on with memory only).",
    TOKENS: "Input tokens of the prompts sent to the model.",
    PROBE_DURATION: "Wall time of each probe finished in the current run, by its status.",
    PROBES: "Probes finished, by status.",
    PROBE_SCORE: "Last score of each probe, per adapter (a sweep's checkpoints side by side).",
    SWEEP_PROGRESS: "Adapters done / adapters of the current checkpoint sweep.",
    RUN_INFO: "The current run (value 1).",
    RUN_ACTIVE: "1 while a run is in progress.",
    RUN_PROGRESS: "Probes done / probes planned.",
    RUN_START_TIME: "Unix time the current run started.",
    EXPORTER_ERRORS: "Telemetry exporter failures (the run went on).",
    SPANS_DROPPED: "Spans that could not be delivered.",
    WORKER_UP: "1 while the pool's worker can take forward calls (0: lost or restarting).",
    WORKER_IN_FLIGHT: "Parts of forward calls sent to the worker and not yet back.",
    WORKER_FORWARD_DURATION: "Compute time of the worker's part of one forward call.",
    WORKER_QUEUE_WAIT: "From the driver's dispatch to the start of the worker's compute.",
    WORKER_BATCH_SIZE: "Prompts in the worker's part of one forward call.",
    WORKER_BUSY: "Seconds the worker spent computing (rate: its busy fraction).",
    WORKER_TOKENS: "Input tokens the worker computed (the planner balances them).",
    WORKER_MEMORY: "Resident memory of the worker process after its last call.",
    WORKER_DEVICE_MEMORY: "Accelerator memory held by the worker's tensors (0 on a CPU).",
    WORKER_FAILURES: "Parts of forward calls lost with the worker (each retried elsewhere).",
}

#: Labels of the per-lookup and per-call metrics. No ``probe``: the series count must not
#: grow with the suite (per-probe hit ratios are in the run's result and its traces).
OPKIND_LABELS = ("op", "view_kind")
#: The hits counter also says where a hit came from: ``memory`` or ``disk``.
HIT_LABELS = ("op", "view_kind", "tier")
TIERS = ("memory", "disk")
PROBE_LABELS = ("probe", "status")
RUN_INFO_LABELS = ("run_id", "suite", "base_model", "adapter")
PROBE_SCORE_LABELS = ("probe", "adapter")
#: Label value of ``adapter`` for an adapter the sweep did not announce (keeps it bounded).
OTHER_ADAPTER = "other"
#: Label of the per-worker metrics: the worker's index in its pool ("0" … "N-1"), bounded by
#: the pool's size (never a host, a process id or an actor id).
WORKER_LABELS = ("worker",)
#: Exporters whose error counter exists (at 0) from the start, so increase() sees the first.
KNOWN_EXPORTERS = ("jsonl", "otel", "prometheus")

BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(10))  # 1 … 512
#: 19 geometric buckets, 0.5 ms … 120 s (ratio ≈ 1.99), 3 significant digits.
FORWARD_DURATION_BUCKETS: tuple[float, ...] = tuple(
    float(f"{0.0005 * (120 / 0.0005) ** (i / 18):.3g}") for i in range(19)
)
