"""``swayscope sway [flags] -- ARGS``: dlm-sway's own ``sway``, with swayscope's telemetry.

The flags are checked here (a bad value exits 2 before sway starts). Then
``sway ARGS`` runs as a child that gets, and alone gets: a temporary folder
first on its PYTHONPATH holding swayscope's ``sitecustomize`` (which installs
:mod:`.hook`) and a link to this swayscope package (so dlm-sway's Python
imports this very swayscope, whether or not it is installed there), and
:data:`~.environment.TELEMETRY_ENV` carrying the flags. Run without ``swayscope
sway``, dlm-sway is untouched. The exit code is sway's.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import swayscope
from swayscope.errors import ConfigError
from swayscope.instrumentation.settings import resolve_settings
from swayscope.integrations.dlm_sway.environment import OWNER_ENV, TELEMETRY_ENV

#: The start-up file the child imports first (shipped in this package).
SITECUSTOMIZE = Path(__file__).with_name("bootstrap") / "sitecustomize.py"
#: Bytes of a ``sway`` script read to tell dlm-sway's from another program of that name.
_SCRIPT_HEAD = 4096


def find_sway(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """dlm-sway's ``sway``: ``explicit``, else the one on PATH. ConfigError when it is missing
    or is another program (the Wayland compositor is also called ``sway``)."""
    env = os.environ if env is None else env
    if explicit is not None:
        # Absolute: ``Path("./sway")`` prints as ``sway``, which exec would look up on PATH.
        path = explicit.absolute()
        origin = f"--sway {str(path)!r}"
    else:
        found = shutil.which("sway", path=env.get("PATH"))
        if found is None:
            raise ConfigError(
                "no `sway` on PATH: install dlm-sway (pip install 'dlm-sway[hf]') or give its "
                "script with --sway PATH"
            )
        path, origin = Path(found), f"`sway` on PATH ({found})"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(f"{origin} is not an executable file; give dlm-sway's sway script")
    try:
        with path.open("rb") as fh:
            head = fh.read(_SCRIPT_HEAD)
    except OSError as exc:
        raise ConfigError(f"{origin} cannot be read ({exc})") from None
    if not head.startswith(b"#!") or b"dlm_sway" not in head:
        raise ConfigError(
            f"{origin} is not dlm-sway's sway (a Python script that starts dlm_sway); "
            "give dlm-sway's script with --sway PATH"
        )
    return path


def prepare_hook_dir(folder: Path) -> None:
    """Fill ``folder`` with the child's ``sitecustomize.py`` and a ``swayscope`` link."""
    shutil.copyfile(SITECUSTOMIZE, folder / "sitecustomize.py")
    (folder / "swayscope").symlink_to(Path(swayscope.__file__).resolve().parent, True)


#: swayscope's extras that the child's telemetry may need: their packages are named in the
#: child's error when its environment lacks one.
TELEMETRY_EXTRAS = ("prometheus", "otel")


def extra_requirements(extra: str) -> list[str]:
    """The requirements swayscope declares for ``extra`` (``swayscope[extra]`` when this
    swayscope is not installed, so its metadata cannot say)."""
    try:
        declared = importlib.metadata.requires("swayscope") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    marker = f'extra == "{extra}"'
    found = [r.split(";", 1)[0].strip() for r in declared if r.endswith(marker)]
    return found or [f"swayscope[{extra}]"]


def child_environment(
    hook_dir: Path,
    given: Mapping[str, object],
    sources: Mapping[str, str],
    env: Mapping[str, str],
) -> dict[str, str]:
    """``env`` plus the hook folder first on PYTHONPATH and the settings in TELEMETRY_ENV."""
    child = dict(env)
    rest = child.get("PYTHONPATH")
    child["PYTHONPATH"] = str(hook_dir) + (os.pathsep + rest if rest else "")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
    child[TELEMETRY_ENV] = json.dumps({
        "settings": settings,
        "sources": {k: sources.get(k, k) for k in settings},
        "requirements": {extra: extra_requirements(extra) for extra in TELEMETRY_EXTRAS},
    })
    child.pop(OWNER_ENV, None)
    return child


@contextmanager
def _forward_sigterm(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """A SIGTERM to this process goes to sway, which ends its run and flushes the telemetry."""

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: nothing to forward from
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch(
    args: Sequence[str],
    given: Mapping[str, object],
    sources: Mapping[str, str],
    *,
    sway: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``sway ARGS`` with the telemetry ``given`` (setting name → value, None: not given;
    ``sources`` names each setting in messages); returns sway's exit code."""
    env = dict(os.environ if env is None else env)
    resolve_settings(given, sources=sources, env=env)
    exe = find_sway(sway, env)
    with tempfile.TemporaryDirectory(prefix="swayscope-sway-") as tmp:
        hook_dir = Path(tmp)
        prepare_hook_dir(hook_dir)
        child_env = child_environment(hook_dir, given, sources, env)
        try:
            proc = subprocess.Popen([str(exe), *args], env=child_env)
        except OSError as exc:
            raise ConfigError(f"{exe} cannot be started: {exc.strerror or exc}") from None
        with _forward_sigterm(proc):
            while True:
                try:
                    code = proc.wait()
                    break
                except KeyboardInterrupt:
                    continue  # sway got the same Ctrl-C; it ends its run and exits on its own
    return 128 - code if code < 0 else code


__all__ = [
    "SITECUSTOMIZE",
    "TELEMETRY_EXTRAS",
    "child_environment",
    "extra_requirements",
    "find_sway",
    "launch",
    "prepare_hook_dir",
]
