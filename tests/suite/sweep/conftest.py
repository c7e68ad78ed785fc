"""Checkpoints of the tiny adapter trained for increasing steps, and a suite to sweep them.

Steps 0, 2, 4, 6, 8 of the tiny adapter's own training (``tiny_adapter_plan``): step 0
is peft's initialisation (``lora_B`` = 0, no effect); over these first steps its
effect on next-token distributions grows at every checkpoint (measured: mean JS
0, 0.0025, 0.011, 0.030, 0.043 nats on delta_kl's prompts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sweep_testing import STEPS, SUITE, Sweep, sweep

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

@pytest.fixture(scope="session")
def checkpoints(tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``step-00000`` … ``step-00008``: the tiny adapter's checkpoints."""
    from swayscope.backends.tiny import TINY_LORA_SHAPE, package_text, tiny_adapter_plan
    from swayscope.training.lora import train_lora

    out = tmp_path_factory.mktemp("checkpoints")
    trained = train_lora(
        tiny_model.base_dir, package_text("finetune.txt"), out, shape=TINY_LORA_SHAPE,
        plan=tiny_adapter_plan(0, steps=STEPS[-1], save_at=STEPS[:-1]),
    )
    assert tuple(sorted(trained.checkpoints)) == STEPS
    return out


@pytest.fixture(scope="session")
def sweep_spec(tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite (delta_kl on its 16 default prompts, perplexity_shift on two chunks)."""
    path = tmp_path_factory.mktemp("spec") / "suite.yaml"
    path.write_text(SUITE.format(base=tiny_model.base_dir), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def five(
    checkpoints: Path, sweep_spec: Path, tmp_path_factory: pytest.TempPathFactory
) -> Sweep:
    """``swayscope sweep`` over the five checkpoints (a glob), with a JSONL trace."""
    return sweep(sweep_spec, tmp_path_factory.mktemp("sweep"), str(checkpoints / "step-*"))
