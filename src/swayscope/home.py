"""Where swayscope keeps what it builds and caches: ``$SWAYSCOPE_HOME``.

Default ``$XDG_CACHE_HOME/swayscope`` (``~/.cache/swayscope``). The demo's models and
outputs live there, and the durable forward cache in its ``cache/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "SWAYSCOPE_HOME"
#: The disk cache's folder inside the home, unless ``cache_dir`` says otherwise.
CACHE_FOLDER = "cache"


def swayscope_home() -> Path:
    """``$SWAYSCOPE_HOME``, else ``$XDG_CACHE_HOME/swayscope``, else ``~/.cache/swayscope``."""
    env = os.environ.get(HOME_VARIABLE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "swayscope"


def default_cache_dir() -> Path:
    """Where the durable forward cache lives by default."""
    return swayscope_home() / CACHE_FOLDER


__all__ = ["CACHE_FOLDER", "HOME_VARIABLE", "default_cache_dir", "swayscope_home"]
