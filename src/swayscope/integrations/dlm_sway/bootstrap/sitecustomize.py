"""swayscope's opt-in hook for dlm-sway, put first on PYTHONPATH by ``swayscope sway`` only.

Python imports the first ``sitecustomize`` on its path at start-up. This one
installs :mod:`swayscope.integrations.dlm_sway.hook` (which acts only when
dlm-sway imports its instrumentation), then runs the ``sitecustomize`` it
shadows, if there is one, so the host's start-up code still runs. A swayscope
that cannot be imported here stops the program with exit 2: the user asked
for telemetry and would otherwise run without it unknowingly.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _install() -> None:
    try:
        from swayscope.integrations.dlm_sway.hook import install
    except Exception as exc:
        sys.stderr.write(
            f"swayscope: error: cannot import swayscope in this Python ({sys.executable}): "
            f"{type(exc).__name__}: {exc}. Install swayscope's dependencies there "
            "(pip install swayscope), or run sway without `swayscope sway`.\n"
        )
        sys.stderr.flush()
        # SystemExit is not honoured during start-up (Python reports it and exits 1).
        os._exit(2)
    install()


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_install()
_run_shadowed()
