"""A pool of forward workers on Ray, behind the driver's one cache.

The driver (:class:`RayBackend`) keeps the instrumentation (the one cache, the
stats, the exporters), the tokenizer, the planner and the views; a pool of Ray
actors (:class:`~.worker.ForwardWorker`, one per GPU or N CPU workers with a
thread count each) holds the model and computes only the cache's misses. Modules,
one concern each:

- :mod:`.cluster` — start a local Ray cluster (loopback only) or join one;
- :mod:`.messages` — what the driver and a worker send each other;
- :mod:`.worker` — the worker: the model, forward calls, the spans it records;
- :mod:`.split` — a call's texts split across workers: by tokens, prefixes at home;
- :mod:`.pool` — the driver's side: placement, dispatch, retries, worker telemetry;
- :mod:`.backend` — :class:`RayBackend`, the views over the pool.

Ray is imported when a pool starts, not with this package (a local cluster keeps
to 127.0.0.1 only when Ray is first imported after :mod:`.cluster` says so).
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ray") is None:  # pragma: no cover - depends on the environment
    raise ImportError(
        "swayscope.backends.ray needs Ray; install it with: pip install 'swayscope[ray]'"
    )

from swayscope.backends.ray.backend import RayBackend
from swayscope.backends.ray.cluster import LOCAL
from swayscope.backends.ray.split import split_batch

__all__ = ["LOCAL", "RayBackend", "split_batch"]
