"""What each span is called and carries: span names, attribute keys, attribute builders.

The names are a public contract (trace queries and dashboards use them); every
key is defined here once. Prompt text appears only when the user opted in
(``capture_prompts``); otherwise spans carry the 12-hex prompt hash. Errors
carry the core's redacted texts, never an exception's own message.
"""

from __future__ import annotations

from typing import Any

from swayscope import __version__
from swayscope.instrumentation.events import (
    CacheLookup,
    ForwardCall,
    ForwardStarted,
    ProbeEnded,
    ProbeStarted,
    RunEnded,
    RunStarted,
    SweepEnded,
    SweepStarted,
    ViewEntered,
)
from swayscope.instrumentation.tracing import Counts

Attributes = dict[str, Any]

#: Instrumentation scope of every span this exporter makes.
SCOPE_NAME = "swayscope"

SPAN_SWEEP = "swayscope.sweep"
SPAN_RUN = "swayscope.run"
# A run's (sweep's) root ends as it starts; its outcome, a child, ends with it.
SPAN_RUN_OUTCOME = "swayscope.run.outcome"
SPAN_SWEEP_OUTCOME = "swayscope.sweep.outcome"
SPAN_PROBE = "swayscope.probe"
SPAN_VIEW = "swayscope.view"
SPAN_FORWARD = "swayscope.forward"
SPAN_CACHE_HIT = "swayscope.cache_hit"
# A pool worker's part of a forward call (swayscope.worker.queue, swayscope.worker.compute)
# and the swayscope.worker.lost event are named in swayscope.instrumentation.vocabulary: the
# workers that record them import no tracing library.

# run
RUN_ID = "swayscope.run_id"
SUITE = "swayscope.suite"
BASE_MODEL = "swayscope.base_model"
ADAPTER = "swayscope.adapter"
VERSION = "swayscope.version"
RUN_TOTAL_PROBES = "swayscope.run.total_probes"
RUN_PROBES = "swayscope.run.probes"
RUN_THREADS = "swayscope.run.threads"
RUN_RESUMED_FROM = "swayscope.run.resumed_from"
RUN_STATUS = "swayscope.run.status"
RUN_PROBES_DONE = "swayscope.run.probes_done"
RUN_PROBES_ERRORED = "swayscope.run.probes_errored"

# the root of each bounded trace (a unit of work or a chunk of one) and its links
CHUNK_INDEX = "swayscope.chunk.index"
LINK = "swayscope.link"
LINK_RUN = "run"
LINK_PREVIOUS_CHUNK = "previous_chunk"
LINK_RESUMED = "resumed"

# sweep: its span is a trace of its own; each adapter's run span links to it
SWEEP_ID = "swayscope.sweep_id"
SWEEP_ADAPTERS = "swayscope.sweep.adapters"
SWEEP_STATUS = "swayscope.sweep.status"
SWEEP_ADAPTERS_DONE = "swayscope.sweep.adapters_done"
#: On a run span's link to the sweep's span (``LINK`` says what the linked span is).
LINK_SWEEP = "sweep"

# probe
PROBE = "swayscope.probe"
PROBE_KIND = "swayscope.probe.kind"
PROBE_INDEX = "swayscope.probe.index"
PROBE_STATUS = "swayscope.probe.status"
PROBE_VERDICT = "swayscope.probe.verdict"
PROBE_SCORE = "swayscope.probe.score"
PROBE_ERROR = "swayscope.probe.error"

# view
VIEW_ID = "swayscope.view_id"
VIEW_KIND = "swayscope.view_kind"
VIEW_SWITCH_SECONDS = "swayscope.view.switch_seconds"

# counts rolled up on run, probe and view spans (and per forward call)
CACHE_HITS = "swayscope.cache.hits"
CACHE_DISK_HITS = "swayscope.cache.disk_hits"
CACHE_MISSES = "swayscope.cache.misses"
FORWARD_CALLS = "swayscope.forward.calls"

# forward calls and cache hits
OP = "swayscope.op"
TOP_K = "swayscope.top_k"
BATCH_SIZE = "swayscope.batch.size"
BATCH_ID = "swayscope.batch.id"
PROMPT_HASH = "swayscope.prompt_hash"
PROMPT_HASHES = "swayscope.prompt_hashes"
PROMPT = "swayscope.prompt"
PROMPTS = "swayscope.prompts"
CACHE_HIT = "swayscope.cache.hit"
CACHE_TIER = "swayscope.cache.tier"

# OpenTelemetry GenAI semantic conventions, only where they mean what they define: no
# gen_ai.operation.name (a forward pass is none of its values; the op is swayscope.op)
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

# OpenTelemetry exception event (semantic conventions)
EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"


def sweep_started(ev: SweepStarted) -> Attributes:
    return {
        SWEEP_ID: ev.sweep_id,
        SUITE: ev.suite,
        BASE_MODEL: ev.base_model,
        SWEEP_ADAPTERS: list(ev.adapters),
        VERSION: __version__,
    }


def sweep_ended(ev: SweepEnded) -> Attributes:
    return {SWEEP_ID: ev.sweep_id, SWEEP_STATUS: ev.status, SWEEP_ADAPTERS_DONE: ev.adapters_done}


def run_started(ev: RunStarted) -> Attributes:
    attrs: Attributes = {
        RUN_ID: ev.run_id,
        SUITE: ev.suite,
        BASE_MODEL: ev.base_model,
        ADAPTER: ev.adapter,
        VERSION: ev.version or __version__,
        RUN_TOTAL_PROBES: ev.total_probes,
    }
    if ev.probes:
        attrs[RUN_PROBES] = list(ev.probes)
    if ev.threads is not None:
        attrs[RUN_THREADS] = ev.threads
    if ev.sweep_id is not None:
        attrs[SWEEP_ID] = ev.sweep_id
    if ev.resumed_from is not None:
        attrs[RUN_RESUMED_FROM] = ev.resumed_from
    return attrs


def run_ended(ev: RunEnded) -> Attributes:
    """What a run's outcome span says: status, probes done and errored, cache counts."""
    return {
        RUN_ID: ev.run_id,
        RUN_STATUS: ev.status,
        RUN_PROBES_DONE: ev.probes_done,
        RUN_PROBES_ERRORED: ev.probes_errored,
        **rolled_up_counts(ev.counts),
    }


def probes_errored(errored: int, total: int) -> str:
    """The run span's status description when probes errored."""
    return f"{errored} of {total} probes errored"


def chunk_root(run_id: str, index: int) -> Attributes:
    """What the root of every bounded trace carries, so a search by run id finds it."""
    return {RUN_ID: run_id, CHUNK_INDEX: index}


def exception_event(error: str, stack: str | None, type_name: str | None = None) -> Attributes:
    """An exception event's attributes from the core's redacted ``Type: message`` text.

    ``type_name`` is the exception's type when known; otherwise it is read from the
    text's ``Type:`` prefix (the form the core and the runner write).
    """
    head, sep, tail = error.partition(": ")
    if sep and (head == type_name or (type_name is None and head.isidentifier())):
        type_name, message = head, tail
    else:
        message = error
    attrs: Attributes = {EXCEPTION_TYPE: type_name or "Exception", EXCEPTION_MESSAGE: message}
    if stack:
        attrs[EXCEPTION_STACKTRACE] = stack
    return attrs


def probe_started(ev: ProbeStarted) -> Attributes:
    return {
        PROBE: ev.probe,
        PROBE_KIND: ev.kind,
        PROBE_INDEX: ev.index,
        RUN_ID: ev.run_id,
    }


def probe_ended(ev: ProbeEnded) -> Attributes:
    attrs: Attributes = {PROBE_STATUS: ev.status, PROBE_VERDICT: ev.verdict}
    if ev.score is not None:
        attrs[PROBE_SCORE] = ev.score
    if ev.error is not None:
        attrs[PROBE_ERROR] = ev.error
    return attrs


def view_entered(ev: ViewEntered) -> Attributes:
    attrs: Attributes = {
        VIEW_ID: ev.view_id,
        VIEW_KIND: ev.view_kind,
        VIEW_SWITCH_SECONDS: ev.switch_s,
    }
    if ev.probe is not None:
        attrs[PROBE] = ev.probe
    return attrs


def rolled_up_counts(counts: Counts) -> Attributes:
    """What a run, probe or view span reports about everything inside it."""
    return {
        CACHE_HITS: counts.hits, CACHE_DISK_HITS: counts.disk_hits,
        CACHE_MISSES: counts.misses, FORWARD_CALLS: counts.calls,
    }


def forward_started(ev: ForwardStarted) -> Attributes:
    """What a forward call's span knows when it starts (its ForwardCall adds the rest)."""
    attrs: Attributes = {
        OP: ev.op,
        VIEW_ID: ev.view_id,
        VIEW_KIND: ev.view_kind,
        BATCH_SIZE: ev.batch_size,
        BATCH_ID: ev.batch_id,
        TOP_K: ev.top_k,
    }
    if ev.probe is not None:
        attrs[PROBE] = ev.probe
    if ev.model:
        attrs[GEN_AI_REQUEST_MODEL] = ev.model
    return attrs


def forward_call(ev: ForwardCall, capture_prompts: bool) -> Attributes:
    attrs: Attributes = {
        OP: ev.op,
        VIEW_ID: ev.view_id,
        VIEW_KIND: ev.view_kind,
        BATCH_SIZE: ev.batch_size,
        BATCH_ID: ev.batch_id,
        CACHE_HITS: ev.cache_hits,
        CACHE_MISSES: ev.cache_misses,
        TOP_K: ev.top_k,
        PROMPT_HASHES: tuple(ev.prompt_hashes),
    }
    if ev.probe is not None:
        attrs[PROBE] = ev.probe
    if ev.model:
        attrs[GEN_AI_REQUEST_MODEL] = ev.model
    if ev.n_tokens is not None:
        attrs[GEN_AI_USAGE_INPUT_TOKENS] = ev.n_tokens
    if ev.n_tokens_generated is not None:
        attrs[GEN_AI_USAGE_OUTPUT_TOKENS] = ev.n_tokens_generated
    if capture_prompts and ev.prompts is not None:
        attrs[PROMPTS] = tuple(ev.prompts)
    return attrs


def cache_hit(ev: CacheLookup, capture_prompts: bool) -> Attributes:
    attrs: Attributes = {
        OP: ev.op,
        VIEW_ID: ev.view_id,
        VIEW_KIND: ev.view_kind,
        PROMPT_HASH: ev.prompt_hash,
        TOP_K: ev.top_k,
        CACHE_HIT: True,
        CACHE_TIER: ev.tier or "memory",
    }
    if ev.probe is not None:
        attrs[PROBE] = ev.probe
    if capture_prompts and ev.prompt is not None:
        attrs[PROMPT] = ev.prompt
    return attrs
