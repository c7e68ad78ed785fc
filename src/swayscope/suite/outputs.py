"""The files a run writes: checked before anything runs, written so a reader is never surprised.

Every output path is checked before a model loads (a run that would fail to
save its result after an hour of work fails in a second instead), two outputs
may not name the same file, and files are written atomically with the
permissions the user's umask gives (or the ones an existing file has).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from swayscope.errors import OutputPathError


def _problem(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return "is a folder, not a file"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file (a FIFO, a device or a socket)"
        if not os.access(path, os.W_OK):
            return "is not writable"
        return None
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            return "has no existing parent folder"
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {str(parent)!r} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: folder {str(parent)!r} is not writable"
    return None


def check_outputs(outputs: Mapping[str, Path | None]) -> None:
    """Refuse, before anything runs, outputs that cannot be written or that name one file.

    ``outputs`` maps how the user named each output (``--json``, ``telemetry.trace
    (suite.yaml:4)``) to its path (None: not asked for).
    """
    seen: dict[str, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        why = _problem(path)
        if why is not None:
            raise OutputPathError(f"{name} {str(path)!r} {why}; choose another path")
        real = os.path.realpath(path)
        if real in seen:
            raise OutputPathError(
                f"{seen[real]} and {name} both name {str(path)!r}: one would overwrite the "
                "other; give each output its own file"
            )
        seen[real] = name


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so a reader sees the old file or the new one, never half of it.

    A new file gets the permissions of the user's umask; a replaced file keeps its own.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["check_outputs", "write_text_atomic"]
