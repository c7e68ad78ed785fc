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
a minute). Ray is imported only when a cluster is opened: its settings are read at
import, and a local cluster keeps to the loopback interface only when Ray is first
imported with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's switch for single-machine
clusters, which makes it take 127.0.0.1 as the node's address).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from swayscope.backends.threads import usable_cpus
from swayscope.errors import ConfigError

log = logging.getLogger(__name__)

#: The address that starts a local cluster for the run.
LOCAL = "local"
#: How long the head node's port may take to accept a connection.
CONNECT_TIMEOUT_S = 2.0
#: Ray's switch that makes a node take the loopback address (read when Ray is imported).
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


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
    """:class:`ConfigError` unless the head node's port accepts a connection in time."""
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
                ray.init(
                    address="local", num_cpus=usable_cpus(), include_dashboard=False,
                    log_to_driver=False, logging_level=logging.WARNING,
                )
                started = True
            else:
                ray.init(
                    address=address, log_to_driver=False, logging_level=logging.WARNING
                )
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
    "Cluster",
    "check_reachable",
    "head_address",
    "open_cluster",
]
