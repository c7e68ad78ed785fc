"""Fixtures for the Ray pool tests: one local Ray cluster (2 CPUs) for the whole session.

Starting a cluster costs seconds, so every test shares it: a backend built while this
process is connected uses the cluster as it is and leaves it up at close, and a CLI run
in a subprocess joins it by address. Workers compute with one torch thread each (the
machine may have two cores and other work). The sweep tests share checkpoints of the
tiny adapter. Ray missing: skipped locally, a failure in CI (``.ci/run`` installs the
``ray`` extra).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ray_testing import CHECKPOINT_STEPS, CLUSTER_CPUS, need_ray

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray cluster on 127.0.0.1 for the session; its GCS address (host:port)."""
    from swayscope.backends.ray.cluster import LOOPBACK_SWITCH

    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_SWITCH, "0")
    ray = need_ray()
    if ray.is_initialized():
        pytest.fail("this test process is already connected to Ray", pytrace=False)
    context = ray.init(
        address="local", num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def checkpoints(tiny_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``step-00000`` … ``step-00006``: the tiny adapter's own training kept at steps 0, 2,
    4 and 6 (as bench/bench_sweep.py trains its checkpoints; about a second)."""
    from swayscope.backends.tiny import TINY_LORA_SHAPE, package_text, tiny_adapter_plan
    from swayscope.training.lora import train_lora

    out = tmp_path_factory.mktemp("checkpoints")
    trained = train_lora(
        tiny_model.base_dir, package_text("finetune.txt"), out, shape=TINY_LORA_SHAPE,
        plan=tiny_adapter_plan(0, steps=CHECKPOINT_STEPS[-1], save_at=CHECKPOINT_STEPS[:-1]),
    )
    assert tuple(sorted(trained.checkpoints)) == CHECKPOINT_STEPS
    return out
