"""Checkpoint sweeps: one suite, one base model, many adapters; how the effect grew.

``swayscope sweep suite.yaml --adapters ckpt/step-*`` runs the suite on each adapter
(folders or globs, or the spec's ``sweep:`` block), in checkpoint order, in one process:
the base model is loaded once, adapters are swapped, and the base view's forward passes
are cached once for all of them; with ``--ray`` (``models.workers``), in parallel on a
pool of workers, one adapter per worker at a time. Modules, one concern each:

- :mod:`.adapters` — which adapters, their labels and checkpoint order;
- :mod:`.runner` — the sweep driver and the :class:`~.runner.AdapterRunner` seam;
- :mod:`.pool` — the adapters on a pool of Ray workers, several at once;
- :mod:`.result` — per adapter outcomes, per probe curves, the summary JSON;
- :mod:`.plots` — score-vs-checkpoint plots: unicode sparklines and inline SVG;
- :mod:`.report` — the terminal table and plots, markdown;
- :mod:`.html` — the self-contained HTML report.
"""
