"""The demo: the built-in tiny model and adapter, and a suite of all five probes."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEMO_SUITE_YAML = """\
version: 1
name: demo
models:
  kind: hf
  base: {base}
  adapter: {adapter}
  device: auto
  dtype: auto
defaults:
  seed: 0
  top_k: 64
  max_batch_size: 16
  max_batch_tokens: 4096
suite:
  - kind: null_adapter
    n: 3
  - kind: delta_kl
  - kind: adapter_ablation
  - kind: prompt_collapse
  - kind: perplexity_shift
"""


def cache_dir() -> Path:
    """Where the demo keeps its model and outputs: ``$SWAYSCOPE_HOME`` or ``~/.cache/swayscope``."""
    env = os.environ.get("SWAYSCOPE_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "swayscope"


def demo_suite_yaml(base: Path, adapter: Path) -> str:
    return DEMO_SUITE_YAML.format(base=json.dumps(str(base)), adapter=json.dumps(str(adapter)))


__all__ = ["DEMO_SUITE_YAML", "cache_dir", "demo_suite_yaml"]
