"""The files a run writes: checked before anything runs, written so a reader is never surprised.

Every output path is checked before a model loads (a run that would fail to
save its result after an hour of work fails in a second instead), two outputs
may not name the same file, and files are written atomically with the
permissions the user's umask gives (or the ones an existing file has).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path

from swayscope.errors import OutputPathError


def temp_path(path: Path) -> Path:
    """The file :func:`write_text_atomic` writes first, next to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) ``folder``'s file system takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255  # what Linux file systems take


def _too_long(path: Path, atomic: bool) -> str | None:
    """Why the name of ``path`` (or of its temporary file, ``atomic``) is too long, or None."""
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    limit = _name_max(folder)
    name = temp_path(path).name if atomic else path.name
    size = len(os.fsencode(name))
    if size <= limit:
        return None
    what = f"its temporary file's name ({name!r})" if atomic else "its name"
    return (
        f"cannot be created: {what} is {size} bytes, over the {limit} bytes a file name may "
        "have there; use a shorter name"
    )


def _problem(path: Path, atomic: bool) -> str | None:
    """Why ``path`` cannot be written (in place, or replaced through a temporary file when
    ``atomic``), or None."""
    too_long = _too_long(path, atomic)
    if too_long is not None:
        return too_long
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


def check_outputs(
    outputs: Mapping[str, Path | None], *, appended: Collection[str] = ()
) -> None:
    """Refuse, before anything runs, outputs that cannot be written or that name one file.

    ``outputs`` maps how the user named each output (``--json``, ``telemetry.trace
    (suite.yaml:4)``) to its path (None: not asked for). Each is written with
    :func:`write_text_atomic`, except those named in ``appended`` (a JSONL trace).
    """
    seen: dict[str, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        why = _problem(path, atomic=name not in appended)
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
    tmp = temp_path(path)
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
