"""Worker threads: restarted in a forked child (a child has none of its parent's threads);
a call bounded in time."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)


def restart_in_forked_child(restart: Callable[[], None]) -> None:
    """Call the bound method ``restart`` in every forked child, while its object lives."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.WeakMethod(restart)

    def after_in_child() -> None:
        method = ref()
        if method is not None:
            method()

    os.register_at_fork(after_in_child=after_in_child)


def call_bounded(fn: Callable[[], object], timeout_s: float, name: str) -> bool:
    """Run ``fn`` in a daemon thread, wait at most ``timeout_s``: True if it finished truthy.

    For a host's provider, whose ``force_flush`` may block on a dead collector.
    """
    result: list[object] = []

    def target() -> None:
        try:
            result.append(fn())
        except Exception as exc:
            log.debug("%s failed: %s", name, exc)
            result.append(False)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    return not thread.is_alive() and bool(result and result[0])
