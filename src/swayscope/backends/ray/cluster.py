"""Where a pool runs: a local Ray cluster this process starts, or a cluster it joins.

``local``: a one-node cluster for this run, listening on 127.0.0.1 only, with the
CPUs this process may use (affinity and cgroup quota aware) and the GPUs Ray
finds; it is stopped when the pool closes. An address (``host:port`` of a head
node, ``ray://host:port`` for Ray Client, or ``auto``: the cluster ``ray start``
runs on this machine) is joined and never stopped: closing only disconnects. A
process already connected to Ray (a host program called ``ray.init``) is used as
it is and left connected.

An address whose port does not accept a TCP connection within
:data:`CONNECT_TIMEOUT_S` is refused before Ray is asked (Ray itself would retry for
a minute), and so is one whose port accepts but does not answer a call of Ray's own
within :data:`PROBE_TIMEOUT_S` (Ray would wait forever). Ray is imported only when a
cluster is opened: its settings are read at import, and a local cluster keeps to the
loopback interface only when Ray is first imported with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's switch for single-machine clusters, which
makes it take 127.0.0.1 as the node's address).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swayscope.backends.threads import usable_cpus
from swayscope.errors import ConfigError

log = logging.getLogger(__name__)

#: The address that starts a local cluster for the run.
LOCAL = "local"
#: How long the head node's port may take to accept a connection.
CONNECT_TIMEOUT_S = 2.0
#: Ray's switch that makes a node take the loopback address (read when Ray is imported).
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: How long a head node may take to answer the probe of :func:`check_ray_head`.
PROBE_TIMEOUT_S = 5.0
#: Ray's switch for TLS on its connections (then the plain-text probe cannot talk to it).
TLS_SWITCH = "RAY_USE_TLS"
#: The call the probe makes: a GCS's (``host:port``), or Ray Client's (``ray://``), by
#: whether the address is a Ray Client one. Both take an empty request.
_HEAD_METHODS = {
    False: "/ray.rpc.NodeInfoGcsService/GetClusterId",
    True: "/ray.rpc.RayletDriver/ClusterInfo",
}


@dataclass(frozen=True, slots=True)
class Cluster:
    """The cluster a pool runs on and what this process must do when it is done with it."""

    address: str
    """As given: ``local``, ``auto``, ``host:port`` or ``ray://host:port``."""
    started: bool
    """This process started it: stop it at close."""
    joined: bool
    """This process connected to it: disconnect at close."""
    cpus: float
    gpus: float

    def resources(self) -> dict[str, float]:
        """What the pool may reserve: ``CPU`` and ``GPU``."""
        return {"CPU": self.cpus, "GPU": self.gpus}

    def describe(self) -> str:
        where = "a local Ray cluster" if self.started else f"the Ray cluster at {self.address}"
        return f"{where} ({self.cpus:g} CPUs, {self.gpus:g} GPUs)"

    def close(self) -> None:
        """Stop the cluster this process started, or disconnect from the one it joined."""
        if not (self.started or self.joined):
            return
        import ray

        if ray.is_initialized():
            ray.shutdown()


def local_resources() -> dict[str, float]:
    """What a local cluster started for a run has, before Ray is asked: ``CPU`` (the CPUs
    this process may use; the GPUs are known once Ray has looked)."""
    return {"CPU": float(usable_cpus())}


def head_address(address: str, source: str) -> tuple[str, int] | None:
    """The (host, port) to check for ``address``; None for ``auto`` (Ray finds it)."""
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{source}: Ray address {address!r} is not 'local', 'auto', host:port or "
            "ray://host:port; give the head node's address (`ray start --head` prints it)"
        )
    return host.strip("[]"), int(port)


def check_reachable(address: str, source: str) -> None:
    """:class:`ConfigError` unless the head node's port accepts a connection in time and
    answers as a Ray head (see :func:`check_ray_head`)."""
    target = head_address(address, source)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{source}: the Ray cluster at {address!r} cannot be reached ({reason}); start "
            "it (`ray start --head`), fix the address, or use a local cluster (--ray alone)"
        ) from None
    check_ray_head(address, target, source)


def check_ray_head(address: str, target: tuple[str, int], source: str) -> None:
    """:class:`ConfigError` unless ``target`` answers one call of Ray's own within
    :data:`PROBE_TIMEOUT_S`: the GCS's ``GetClusterId`` (``host:port``) or Ray Client's
    ``ClusterInfo`` (``ray://``). Ray waits forever on a port that accepts connections but
    is something else (a wrong port, the dashboard); this says so in seconds.

    A Ray head answers, or refuses the call for want of Ray's token (token authentication);
    any other server has no such method, does not speak gRPC, or does not answer. Skipped
    when Ray's connections use TLS (``RAY_USE_TLS``): Ray's own settings then apply.
    """
    if os.environ.get(TLS_SWITCH, "0").strip().lower() not in ("", "0", "false"):
        return
    import grpc

    client = address.startswith("ray://")
    host, port = target
    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        channel.unary_unary(_HEAD_METHODS[client])(b"", timeout=PROBE_TIMEOUT_S)
    except grpc.RpcError as exc:
        code = exc.code()  # the error is also the call
        if code != grpc.StatusCode.UNAUTHENTICATED:
            raise ConfigError(
                f"{source}: {address!r} is not a Ray head node: {_not_ray(code, client)}. Give "
                "the address `ray start --head` printed (host:port of its GCS, port 6379 by "
                "default; ray://host:10001 for Ray Client), or use a local cluster (--ray alone)"
            ) from None
    finally:
        channel.close()


def _not_ray(code: object, client: bool) -> str:
    """What a probe's failure says of the server."""
    import grpc

    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"it accepts connections but did not answer Ray's protocol in {PROBE_TIMEOUT_S:g} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "it does not speak gRPC, as Ray does (an HTTP server such as the dashboard?)"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        other = "the GCS port? drop ray://" if client else "the Ray Client port? write ray://"
        return f"it speaks gRPC but has no Ray {'Client' if client else 'GCS'} service ({other})"
    return f"it answered Ray's call with {getattr(code, 'name', code)}"


def check_resources(
    where: str,
    have: Mapping[str, float],
    count: int,
    cpus: float,
    gpus: float,
    sources: Mapping[str, str],
) -> None:
    """:class:`ConfigError` naming the setting when the cluster ``where`` describes, which
    has ``have`` (``CPU``, ``GPU``: those it is known to have), cannot hold the pool."""
    for kind, each, key in (("CPU", cpus, "cpus"), ("GPU", gpus, "gpus")):
        need = count * each
        if kind in have and need > have[kind]:
            raise ConfigError(
                f"{sources['count']}: {count} workers of {each:g} {kind}s each need "
                f"{need:g} {kind}s; {where} has {have[kind]:g}. Use fewer workers, "
                f"or fewer {kind}s per worker ({sources[key]})"
            )


def _init(**kwargs: Any) -> None:
    """``ray.init(**kwargs)``, with SIGTERM left to this process. ray.init's first act is to
    make SIGTERM exit the process with code 15: a SIGTERM while it starts or joins the
    cluster is turned back into the interrupt SIGTERM is here (exit code 2, the pool
    stopped), and the handler from before is put back once it returns."""
    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(**kwargs)
    except SystemExit as exc:
        if exc.code == signal.SIGTERM:
            raise KeyboardInterrupt(f"signal {signal.SIGTERM:d}") from None
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def open_cluster(address: str, sources: Mapping[str, str]) -> Cluster:
    """Start, join or reuse the cluster ``address`` names (see the module doc)."""
    source = sources.get("address", "address")
    if address == LOCAL and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_SWITCH, "0")
    elif address != LOCAL:
        check_reachable(address, source)
    import ray

    started = joined = False
    if not ray.is_initialized():
        try:
            if address == LOCAL:
                _init(
                    address="local", num_cpus=usable_cpus(), include_dashboard=False,
                    log_to_driver=False, logging_level=logging.WARNING,
                )
                started = True
            else:
                _init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                joined = True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: cannot {'start a local' if address == LOCAL else 'join the'} Ray "
                f"cluster{'' if address == LOCAL else f' at {address!r}'}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    else:
        log.info("using the Ray cluster this process is already connected to")
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return Cluster(
        address,
        started,
        joined,
        float(resources.get("CPU", 0.0)),
        float(resources.get("GPU", 0.0)),
    )


__all__ = [
    "CONNECT_TIMEOUT_S",
    "LOCAL",
    "LOOPBACK_SWITCH",
    "PROBE_TIMEOUT_S",
    "TLS_SWITCH",
    "Cluster",
    "check_ray_head",
    "check_reachable",
    "check_resources",
    "head_address",
    "local_resources",
    "open_cluster",
]
