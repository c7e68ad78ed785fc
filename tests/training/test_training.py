"""Training LoRA adapters: checkpoints at the steps asked for, the controls, the cached trio."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from swayscope.backends.tiny import TINY_LORA_SHAPE, build_tiny, package_text, tiny_adapter_plan
from swayscope.errors import ConfigError
from swayscope.training.controls import is_lora_b, write_random_adapter
from swayscope.training.lora import checkpoint_name, train_lora
from swayscope.training.plan import LoraShape, TrainingPlan
from swayscope.training.trio import MARKER, TRIO_NAMES, build_adapter_trio

WEIGHTS = "adapter_model.safetensors"
PLAN = TrainingPlan(steps=12, lr=3e-3, batch_size=8, window=32, seed=0, threads=1)


def tensors(folder: Path) -> dict[str, object]:
    return load_file(str(folder / WEIGHTS))


def rms(t: object) -> float:
    return float(t.float().pow(2).mean().sqrt())  # type: ignore[attr-defined]


def test_checkpoints_at_the_steps_asked_for_in_step_order(tiny_base: Path, tmp_path: Path) -> None:
    plan = replace(PLAN, save_at=(0, 3, 6))
    steps_seen: list[int] = []
    trained = train_lora(
        tiny_base, package_text("shakespeare.txt"), tmp_path, shape=TINY_LORA_SHAPE, plan=plan,
        on_step=lambda step, loss: steps_seen.append(step),
    )
    assert sorted(trained.checkpoints) == [0, 3, 6, 12]
    assert [p.name for p in sorted(tmp_path.iterdir())] == [
        "step-00000", "step-00003", "step-00006", "step-00012"
    ]
    assert trained.final == tmp_path / checkpoint_name(12)
    assert steps_seen == list(range(1, 13)) and len(trained.losses) == 12
    assert trained.seconds > 0
    # Step 0 is peft's initialisation: lora_B is zero, so the adapter changes nothing.
    init = tensors(trained.checkpoints[0])
    assert all(rms(t) == 0.0 for name, t in init.items() if is_lora_b(name))
    # Training moves lora_B, a bit more with every checkpoint.
    sizes = [
        sum(rms(t) for name, t in tensors(trained.checkpoints[s]).items() if is_lora_b(name))
        for s in (3, 6, 12)
    ]
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    config = json.loads((trained.final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == tiny_base.name  # never the training path
    assert config["r"] == TINY_LORA_SHAPE.rank
    assert not (trained.final / "README.md").exists()


def test_training_lowers_the_loss_and_is_deterministic(tiny_base: Path, tmp_path: Path) -> None:
    plan = replace(PLAN, steps=30)
    text = package_text("shakespeare.txt")
    a = train_lora(tiny_base, text, tmp_path / "a", shape=TINY_LORA_SHAPE, plan=plan)
    b = train_lora(tiny_base, text, tmp_path / "b", shape=TINY_LORA_SHAPE, plan=plan)
    assert sum(a.losses[-5:]) / 5 < a.losses[0]
    assert a.losses == b.losses
    assert (a.final / WEIGHTS).read_bytes() == (b.final / WEIGHTS).read_bytes()


def test_the_tiny_builders_adapter_is_train_lora_with_the_tiny_plan(tmp_path: Path) -> None:
    """What a checkpoint sweep relies on: the tiny adapter at N steps is exactly what
    train_lora writes for the tiny plan, so its checkpoints are that adapter's history."""
    paths = build_tiny(tmp_path / "tiny", seed=0)
    trained = train_lora(
        paths.base_dir, package_text("finetune.txt"), tmp_path / "ckpt",
        shape=TINY_LORA_SHAPE, plan=tiny_adapter_plan(0, save_at=(10, 20)),
    )
    assert sorted(trained.checkpoints) == [10, 20, 40]
    assert (trained.final / WEIGHTS).read_bytes() == (paths.adapter_dir / WEIGHTS).read_bytes()


def test_random_control_keeps_lora_a_and_matches_the_trained_size(
    tiny_base: Path, tmp_path: Path
) -> None:
    trained = train_lora(
        tiny_base, package_text("shakespeare.txt"), tmp_path / "run",
        shape=TINY_LORA_SHAPE, plan=replace(PLAN, save_at=(0,)),
    )
    out = write_random_adapter(trained.checkpoints[0], trained.final, tmp_path / "random", seed=0)
    init, done, rand = tensors(trained.checkpoints[0]), tensors(trained.final), tensors(out)
    assert set(rand) == set(done)
    for name, t in rand.items():
        if is_lora_b(name):
            assert rms(t) == pytest.approx(rms(done[name]), rel=0.1)
            assert not bool((t == done[name]).all())  # type: ignore[union-attr]
        else:
            assert bool((t == init[name]).all())  # type: ignore[union-attr]
    again = write_random_adapter(trained.checkpoints[0], trained.final, tmp_path / "r2", seed=0)
    assert (again / WEIGHTS).read_bytes() == (out / WEIGHTS).read_bytes()
    assert (out / "adapter_config.json").read_text() == (
        trained.final / "adapter_config.json"
    ).read_text()


def test_the_trio_is_built_once_then_reused(tiny_base: Path, tmp_path: Path) -> None:
    entered: list[int] = []

    def progress(steps: int):  # type: ignore[no-untyped-def]
        from contextlib import contextmanager

        @contextmanager
        def bar():  # type: ignore[no-untyped-def]
            entered.append(steps)
            yield lambda step, loss: None

        return bar()

    text = package_text("shakespeare.txt")
    root = tmp_path / "trio"
    trio = build_adapter_trio(tiny_base, text, root, shape=TINY_LORA_SHAPE, plan=PLAN,
                              progress=progress)
    assert entered == [PLAN.steps]
    assert trio.adapters() == {name: root / name for name in TRIO_NAMES}
    assert trio.steps == PLAN.steps and trio.train_seconds > 0
    assert trio.last_loss < trio.first_loss
    assert sorted(p.name for p in root.iterdir()) == sorted([*TRIO_NAMES, MARKER])
    noop = tensors(trio.noop)
    assert all(rms(t) == 0.0 for name, t in noop.items() if is_lora_b(name))
    assert set(noop) == set(tensors(trio.trained)) == set(tensors(trio.random))
    before = (trio.trained / WEIGHTS).stat().st_mtime_ns

    again = build_adapter_trio(tiny_base, text, root, shape=TINY_LORA_SHAPE, plan=PLAN,
                               progress=progress)
    assert again == trio and entered == [PLAN.steps]  # reused: no training, no bar
    assert (trio.trained / WEIGHTS).stat().st_mtime_ns == before

    longer = replace(PLAN, steps=PLAN.steps + 2)
    rebuilt = build_adapter_trio(tiny_base, text, root, shape=TINY_LORA_SHAPE, plan=longer,
                                 progress=progress)
    assert entered == [PLAN.steps, longer.steps] and rebuilt.steps == longer.steps


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: TrainingPlan(steps=0, lr=1e-3, batch_size=1, window=8), "training steps"),
        (lambda: TrainingPlan(steps=5, lr=0.0, batch_size=1, window=8), "learning rate"),
        (lambda: TrainingPlan(steps=5, lr=1e-3, batch_size=1, window=8, save_at=(6,)),
         "save_at steps [6] are outside 0..5"),
        (lambda: LoraShape(rank=0), "LoRA rank"),
        (lambda: LoraShape(targets=()), "targets is empty"),
    ],
)
def test_bad_plans_and_shapes_are_refused(make: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        make()  # type: ignore[operator]


def test_a_folder_without_a_model_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        build_adapter_trio(tmp_path, "some text", tmp_path / "out", shape=LoraShape(), plan=PLAN)
