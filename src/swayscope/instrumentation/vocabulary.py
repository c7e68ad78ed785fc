"""The bounded words every layer shares: probe statuses, view kinds, ops, the default top-k.

Defined once here, at the bottom of the layers, so events, probes, results and
exporters agree on them; they are also the only values metric labels take.
"""

from __future__ import annotations

from typing import Literal, get_args

#: How a probe ended. ``warn`` and ``skip`` count as passed for the exit code.
ProbeStatus = Literal["pass", "fail", "warn", "skip", "error"]
PROBE_STATUSES: tuple[ProbeStatus, ...] = get_args(ProbeStatus)
#: How a probe's events end: a status, or ``not_run`` when the run was stopped mid-probe
#: (Ctrl-C, SIGTERM): no verdict, counted nowhere as a probe result.
ProbeOutcome = Literal["pass", "fail", "warn", "skip", "error", "not_run"]

#: Bounded label values for a view. Anything else a custom backend invents is "other".
ViewKind = Literal["base", "ft", "scaled", "null"]
VIEW_KINDS: tuple[ViewKind, ...] = get_args(ViewKind)

#: The ops every backend view has (the cache and the metrics key on them): three that
#: score, and greedy generation.
KnownOp = Literal["next_token_dist", "rolling_logprob", "logprob_of", "generate"]
KNOWN_OPS: tuple[KnownOp, ...] = get_args(KnownOp)
#: The op of greedy generation: its values carry the tokens they generated.
GENERATE_OP: KnownOp = "generate"

#: The top-k a next-token distribution keeps when none is asked for.
DEFAULT_TOP_K = 256

#: What a worker of a pool records for its part of a forward call: spans (children of the
#: call's ``swayscope.forward`` span), their attributes, and the event on the call's span
#: when a worker is lost mid-call. Public names, like every span and attribute name.
SPAN_WORKER_QUEUE = "swayscope.worker.queue"
SPAN_WORKER_COMPUTE = "swayscope.worker.compute"
WORKER = "swayscope.worker"
WORKER_ATTEMPT = "swayscope.worker.attempt"
WORKER_PID = "swayscope.worker.pid"
WORKER_RETRIED_ON = "swayscope.worker.retried_on"
WORKER_ERROR = "swayscope.worker.error"
WORKER_BATCH_SIZE = "swayscope.worker.batch.size"
WORKER_TOKENS = "swayscope.worker.tokens"
EVENT_WORKER_LOST = "swayscope.worker.lost"

__all__ = [
    "DEFAULT_TOP_K",
    "EVENT_WORKER_LOST",
    "GENERATE_OP",
    "KNOWN_OPS",
    "PROBE_STATUSES",
    "SPAN_WORKER_COMPUTE",
    "SPAN_WORKER_QUEUE",
    "VIEW_KINDS",
    "WORKER",
    "WORKER_ATTEMPT",
    "WORKER_BATCH_SIZE",
    "WORKER_ERROR",
    "WORKER_PID",
    "WORKER_RETRIED_ON",
    "WORKER_TOKENS",
    "KnownOp",
    "ProbeOutcome",
    "ProbeStatus",
    "ViewKind",
]
