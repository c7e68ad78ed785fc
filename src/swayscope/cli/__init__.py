"""The ``swayscope`` command: run, sweep, demo, convert, sway, trace summarize, tiny-model,
cache.

Exit codes: 0 every probe passed, 1 a probe failed, 2 bad input or error. One module per
command (group); each registers its commands on :data:`app` when imported.
"""

from __future__ import annotations

# isort: off
# Import order is the order of the commands in --help.
from swayscope.cli import run, demo, sweep, dlm_sway, utilities, cache
# isort: on
from swayscope.cli.app import app, main
from swayscope.cli.flags import FLAG_OF, RUN_FLAG_OF, RUN_FLAGS, TELEMETRY_FLAGS, WORKER_FLAGS

#: The command modules: importing them is what registers their commands.
COMMAND_MODULES = (run, demo, sweep, dlm_sway, utilities, cache)

__all__ = [
    "COMMAND_MODULES", "FLAG_OF", "RUN_FLAGS", "RUN_FLAG_OF", "TELEMETRY_FLAGS", "WORKER_FLAGS",
    "app", "main",
]
