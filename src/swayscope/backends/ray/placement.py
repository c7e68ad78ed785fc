"""Starting and stopping a pool's workers: resources checked, the pool placed whole (a
placement group, one bundle per worker), one actor per bundle, every model loaded."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from swayscope.backends.ray.cluster import Cluster
from swayscope.backends.ray.messages import WorkerConfig, WorkerFacts
from swayscope.backends.ray.worker import ForwardWorker
from swayscope.errors import AdapterLoadError, ConfigError, ModelLoadError

log = logging.getLogger(__name__)

#: How often Ray restarts a lost worker (each restart reloads the model).
MAX_RESTARTS = 2
#: How long the cluster may take to find room for the whole pool.
PLACEMENT_TIMEOUT_S = 60.0
#: How long the workers may take to load the model (a large model from a slow disk).
LOAD_TIMEOUT_S = 900.0

#: A started worker: its label (its index) and its actor handle.
Started = tuple[str, Any]


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``: enough to name a remote failure in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def place(
    cluster: Cluster, count: int, cpus: float, gpus: float, sources: Mapping[str, str]
) -> Any:
    """Reserve one bundle per worker, all or none: the placement group."""
    from ray.util.placement_group import placement_group

    bundle = {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}
    group = placement_group([dict(bundle) for _ in range(count)], strategy="PACK")
    if not group.wait(PLACEMENT_TIMEOUT_S):
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)
        raise ConfigError(
            f"{sources['count']}: {cluster.describe()} found no room for "
            f"{count} workers of {bundle} each within {PLACEMENT_TIMEOUT_S:g} s (other "
            "work holds its resources?); use fewer workers or free the cluster"
        )
    return group


def start_actors(
    group: Any, configs: Sequence[WorkerConfig], cpus: float, gpus: float
) -> list[Any]:
    """One :class:`ForwardWorker` actor per config, each in its own bundle of ``group``."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    actor_class = ray.remote(ForwardWorker)
    return [
        actor_class.options(
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=config.index
            ),
        ).remote(config)
        for config in configs
    ]


def wait_loaded(workers: Sequence[Started], model: str) -> list[WorkerFacts]:
    """Every worker's facts once it loaded the model; the first failure as a
    :class:`ModelLoadError` naming ``model`` (the setting) and the worker's own error
    (:class:`AdapterLoadError` when the base loaded and the adapter did not attach)."""
    import ray
    from ray.exceptions import RayActorError

    refs = [actor.facts.remote() for _, actor in workers]
    _, waiting = ray.wait(refs, num_returns=len(refs), timeout=LOAD_TIMEOUT_S)
    if waiting:
        raise ModelLoadError(
            f"{model}: {len(waiting)} of {len(refs)} workers did not load the model "
            f"within {LOAD_TIMEOUT_S:g} s"
        )
    facts: list[WorkerFacts] = []
    for (label, _), ref in zip(workers, refs, strict=True):
        try:
            fact: WorkerFacts = ray.get(ref)
        except RayActorError as exc:
            raise ModelLoadError(
                f"{model}: worker {label} died while loading the model "
                f"({first_line(exc)}); is swayscope[hf] installed on every node?"
            ) from None
        if fact.error is not None:
            # The adapter's own fault (the base loaded) is told apart: a sweep goes on
            # without that adapter.
            failure = AdapterLoadError if fact.adapter_error else ModelLoadError
            raise failure(
                f"{model}: worker {label} (pid {fact.pid} on {fact.node}) could not load "
                f"the model: {fact.error}"
            )
        facts.append(fact)
    first = facts[0]
    for fact in facts[1:]:
        if (fact.vocab_size, fact.context_length, fact.dtype) != (
            first.vocab_size, first.context_length, first.dtype
        ):
            raise ModelLoadError(
                f"{model}: workers 0 and {fact.index} loaded different models (vocabulary "
                f"{first.vocab_size} vs {fact.vocab_size}, dtype {first.dtype} vs "
                f"{fact.dtype}); give every node the same model files"
            )
    return facts


def release(workers: Sequence[Started], group: Any) -> None:
    """Kill every worker (no restart) and remove the placement group; what fails is
    logged (the workers may be gone already)."""
    import ray

    if not ray.is_initialized():
        return
    for label, actor in workers:
        try:
            ray.kill(actor, no_restart=True)
        except Exception as exc:
            log.debug("could not stop worker %s: %s", label, exc)
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(group)
        except Exception as exc:
            log.debug("could not remove the placement group: %s", exc)


__all__ = [
    "LOAD_TIMEOUT_S",
    "MAX_RESTARTS",
    "PLACEMENT_TIMEOUT_S",
    "Started",
    "first_line",
    "place",
    "release",
    "start_actors",
    "wait_loaded",
]
