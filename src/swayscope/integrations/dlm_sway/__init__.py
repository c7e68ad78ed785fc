"""dlm-sway (``sway``), the tool swayscope grew from: two ways in.

- :mod:`.suite_format` reads a dlm-sway ``sway.yaml`` as a swayscope suite
  (``swayscope run sway.yaml``) and converts it (``swayscope convert``).
- :mod:`.launcher` runs dlm-sway's own ``sway`` with swayscope's telemetry
  (``swayscope sway [flags] -- run sway.yaml``): :mod:`.hook` makes dlm-sway's
  instrumentation module resolve to :mod:`.shim`, which is
  :mod:`swayscope.instrumentation` plus the run's exporters (:mod:`.session`),
  and :mod:`.observe` scopes dlm-sway's runs and probes.

This package imports nothing at import time, so the hook stays light.
"""
