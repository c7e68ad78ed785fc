"""Which adapters a sweep runs, their labels and their checkpoint order (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swayscope.errors import SpecError
from swayscope.suite.spec import load_suite
from swayscope.suite.sweep.adapters import expand, named_adapters, order_adapters, parse_step


def folders(root: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        path = root / name
        path.mkdir(parents=True)
        out.append(path)
    return out


@pytest.mark.parametrize(
    ("name", "step"),
    [("step-00040", 40), ("checkpoint-1000", 1000), ("ckpt_3", 3), ("123", 123),
     ("final", None), ("tiny-lora", None), ("lora-v2", 2)],
)
def test_the_step_is_the_number_a_name_ends_with(name: str, step: int | None) -> None:
    assert parse_step(name) == step


def test_glob_matches_in_natural_order_and_checkpoints_by_step(tmp_path: Path) -> None:
    folders(tmp_path, "checkpoint-1000", "checkpoint-500", "checkpoint-2000")
    (tmp_path / "checkpoint-3000").write_text("a file, not a folder")
    paths = expand([str(tmp_path / "checkpoint-*")], "--adapters")
    assert [p.name for p in paths] == ["checkpoint-500", "checkpoint-1000", "checkpoint-2000"]
    # Given in another order: every name has a step, so the sweep runs by step.
    reordered = [paths[2], paths[0], paths[1]]
    adapters, order = order_adapters(reordered)
    assert order == "step"
    assert [(a.label, a.step, a.index) for a in adapters] == [
        ("checkpoint-500", 500, 0), ("checkpoint-1000", 1000, 1), ("checkpoint-2000", 2000, 2)
    ]


def test_a_name_without_a_step_keeps_the_order_given(tmp_path: Path) -> None:
    paths = folders(tmp_path, "step-20", "step-10", "final")
    adapters, order = order_adapters(paths)
    assert order == "given"
    assert [a.label for a in adapters] == ["step-20", "step-10", "final"]
    assert [a.step for a in adapters] == [20, 10, None]


def test_labels_are_unique(tmp_path: Path) -> None:
    paths = folders(tmp_path, "run-a/final", "run-b/final", "x/run-a/final", "solo")
    adapters, _ = order_adapters(paths)
    assert [a.label for a in adapters] == ["run-a/final", "run-b/final", "run-a/final#2", "solo"]


def test_labelling_many_adapters_that_share_names_is_linear() -> None:
    """1,500 folders of one name under parents of one name: ``same/adapter``, ``#2``, …
    (each label was checked against every earlier one, for each number tried: cubic,
    7.9 s before a sweep started)."""
    import time

    paths = [Path(f"/runs/{i}/same/adapter") for i in range(1500)]
    started = time.perf_counter()
    adapters, _ = order_adapters(paths)
    took = time.perf_counter() - started
    labels = [a.label for a in adapters]
    assert labels[:3] == ["same/adapter", "same/adapter#2", "same/adapter#3"]
    assert len(set(labels)) == 1500 and labels[-1] == "same/adapter#1500"
    assert took < 0.5, f"{took:.2f} s"


def test_duplicates_are_dropped_and_named_adapters_keep_their_names(tmp_path: Path) -> None:
    (a,) = folders(tmp_path, "a")
    assert expand([str(a), str(tmp_path / "*")], "--adapters") == [a]
    named = named_adapters([("trained", a), ("noop", a)])
    assert [(n.label, n.index) for n in named] == [("trained", 0), ("noop", 1)]


def test_missing_folders_and_empty_patterns_stop_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"--adapters: adapter folder '.*nope' does not exist"):
        expand([str(tmp_path / "nope")], "--adapters")
    with pytest.raises(SpecError, match=r"pattern '.*ckpt-\*' matches no folder"):
        expand([str(tmp_path / "ckpt-*")], "--adapters")


def test_the_spec_sweep_block_resolves_against_the_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "suite.yaml"
    spec.write_text(
        "version: 1\nmodels:\n  kind: hf\n  base: base\nsweep:\n  adapters: [ckpt/step-*, "
        "/abs/final]\nsuite:\n  - kind: delta_kl\n"
    )
    loaded = load_suite(spec)
    assert loaded.spec.sweep is not None
    assert loaded.spec.sweep.adapters == [str(tmp_path / "ckpt/step-*"), "/abs/final"]
    spec.write_text("version: 1\nsweep:\n  adapters: []\nsuite:\n  - kind: delta_kl\n")
    with pytest.raises(SpecError, match=r"suite.yaml:3: sweep.adapters: .*list the adapter"):
        load_suite(spec)


def test_the_cli_refuses_what_it_cannot_sweep_before_anything_loads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from swayscope.cli import app

    (ckpt,) = folders(tmp_path, "step-1")
    spec = tmp_path / "suite.yaml"
    spec.write_text("version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n")

    def sweep(*args: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, ["sweep", str(spec), "--out", str(tmp_path / "o"), *args])
        return res.exit_code, res.output

    code, out = sweep()
    assert code == 2 and "no adapters to sweep; give --adapters DIR..." in out
    code, out = sweep(str(ckpt))
    assert code == 2 and "give adapter folders after --adapters" in out
    code, out = sweep("--adapters", str(ckpt), "--adapters", str(ckpt), str(ckpt))
    assert code == 2 and "not both" in out
    code, out = sweep("--adapters", str(ckpt))
    assert code == 2 and "models.kind must be 'hf' (got 'dummy')" in out
    assert not (tmp_path / "o").exists()
