"""Worker threads, restarted in a forked child (a child has none of its parent's threads)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


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
