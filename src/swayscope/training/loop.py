"""The training loop: AdamW steps of next-token loss on random windows of a token stream."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from swayscope.errors import ConfigError

#: Called after every step with the step number (1-based) and that step's loss.
StepCallback = Callable[[int, float], None]


def train_steps(
    model: Any,
    params: Sequence[Any],
    ids: Any,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    window: int,
    seed: int,
    on_step: StepCallback | None = None,
) -> list[float]:
    """Train ``params`` of ``model`` for ``steps`` steps; return the loss of each step.

    Each step draws ``batch_size`` windows of ``window`` tokens (fewer when ``ids`` is
    shorter) at offsets from a generator seeded with ``seed``, so the data order is
    the same on every run. The model is left in eval mode. A loss that is not finite
    stops training with a :class:`ConfigError` (the learning rate is too high).
    """
    import torch

    n = int(ids.numel())
    if n < 2:
        raise ConfigError(f"training text has {n} token(s); give a text of at least 2 tokens")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(list(params), lr=lr, weight_decay=0.0)
    span = min(window, n - 1)
    losses: list[float] = []
    model.train()
    try:
        for step in range(1, steps + 1):
            starts = torch.randint(0, n - span, (batch_size,), generator=gen)
            batch = torch.stack([ids[s : s + span] for s in starts.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ConfigError(
                    f"training loss is {value} at step {step} (lr {lr:g}); lower the learning rate"
                )
            losses.append(value)
            if on_step is not None:
                on_step(step, value)
    finally:
        model.eval()
    return losses


__all__ = ["StepCallback", "train_steps"]
