"""What machine a benchmark ran on, for the numbers in docs/benchmarks.md."""

from __future__ import annotations

import platform
import subprocess


def cpu_model() -> str:
    """The ``Model name`` line of ``lscpu``, else what ``platform`` knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
