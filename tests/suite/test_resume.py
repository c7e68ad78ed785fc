"""Long runs survive a crash: run the same command again and it finishes, computing only
what the killed run had not; a new adapter of the same base computes no base-view pass."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sway_testing import popen_swayscope, swayscope

from swayscope.backends.tiny import TinyModelPaths
from swayscope.instrumentation.disk_cache import FILE_NAME, DiskCache

WORDS = (
    "river", "stone", "quiet", "lantern", "ember", "harbor", "meadow", "copper", "thistle",
    "orchard", "willow", "falcon", "granite", "saffron", "tundra", "velvet",
)


def long_spec(tmp_path: Path, model: TinyModelPaths, adapter: Path | None = None,
              probes: int = 12, prompts: int = 24) -> Path:
    """Enough distinct prompts to take a few seconds on the tiny model."""
    lines = [
        "version: 1", "name: long", "models:", "  kind: hf",
        f"  base: {json.dumps(str(model.base_dir))}",
        f"  adapter: {json.dumps(str(adapter or model.adapter_dir))}",
        "defaults:", "  top_k: 16", "  max_batch_size: 8", "suite:",
    ]
    for p in range(probes):
        lines += ["  - kind: delta_kl", f"    name: dk{p}", "    n_boot: 0", "    prompts:"]
        for i in range(prompts):
            text = " ".join(WORDS[(p * 7 + i * 3 + j) % len(WORDS)] for j in range(30 + i % 7))
            lines.append(f"      - {json.dumps(f'{p}.{i} {text}')}")
    spec = tmp_path / "long.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def entries(folder: Path) -> int:
    if not (folder / FILE_NAME).exists():
        return 0
    try:
        with sqlite3.connect(f"file:{folder / FILE_NAME}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT value FROM meta WHERE name = 'entries'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_run_killed_midway_resumes_to_the_same_result(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    spec = long_spec(tmp_path, tiny_model)
    common = ["--threads", "1"]
    ref = swayscope(tmp_path, "run", str(spec), "--json", "ref.json", "--cache-dir", "ref",
                    *common, timeout=300)
    assert ref.returncode in (0, 1), ref.stderr[-2000:]
    cold = result(tmp_path / "ref.json")
    total = entries(tmp_path / "ref")
    assert total > 300

    proc = popen_swayscope(tmp_path, "run", str(spec), "--cache-dir", "c", *common)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if entries(tmp_path / "c") >= total // 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    kept = entries(tmp_path / "c")
    with sqlite3.connect(tmp_path / "c" / FILE_NAME) as db:
        (killed,) = db.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()

    again = swayscope(tmp_path, "run", str(spec), "--json", "resumed.json", "--cache-dir", "c",
                      *common, timeout=300)
    assert again.returncode == ref.returncode, again.stderr[-2000:]
    resumed = result(tmp_path / "resumed.json")
    assert resumed["resumed_from"] == killed
    assert f"from the disk cache (resumed run {killed})" in again.stdout
    stats = resumed["backend_stats"]
    assert stats["disk_hits"] >= kept > 0
    # only what the killed run had not finished is computed
    assert stats["forward_passes"] <= cold["backend_stats"]["forward_passes"] - kept
    assert stats["forward_passes"] + stats["disk_hits"] == cold["backend_stats"]["forward_passes"]
    # the same verdicts and scores as the run that was never interrupted
    for want, got in zip(cold["probes"], resumed["probes"], strict=True):
        assert (want["name"], want["verdict"]) == (got["name"], got["verdict"])
        assert got["score"] == pytest.approx(want["score"], rel=1e-6, abs=1e-9)
    # a third run of the same finished work is no resumption: every lookup from disk
    warm = swayscope(tmp_path, "run", str(spec), "--json", "warm.json", "--cache-dir", "c",
                     *common, timeout=300)
    data = result(tmp_path / "warm.json")
    assert warm.returncode == ref.returncode and data["resumed_from"] is None
    assert data["backend_stats"]["forward_passes"] == 0


def scaled_adapter(model: TinyModelPaths, where: Path, factor: float) -> Path:
    """A second adapter of the same base: the tiny adapter with lora_B scaled."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(model.adapter_dir, where)
    weights = where / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v * factor if "lora_B" in k else v for k, v in tensors.items()}, str(weights))
    return where


def test_a_new_adapter_of_the_same_base_computes_no_base_view_pass(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    first = long_spec(tmp_path, tiny_model, probes=2, prompts=8)
    done = swayscope(tmp_path, "run", str(first), "--json", "a.json", "--threads", "1")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    a = result(tmp_path / "a.json")["backend_stats"]
    assert a["base_forward_passes"] > 0
    other = scaled_adapter(tiny_model, tmp_path / "other-adapter", 0.5)
    second = long_spec(tmp_path, tiny_model, adapter=other, probes=2, prompts=8)
    done = swayscope(tmp_path, "run", str(second), "--json", "b.json", "--threads", "1")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    b = result(tmp_path / "b.json")
    assert b["backend_stats"]["base_forward_passes"] == 0
    assert b["backend_stats"]["disk_hits"] == a["base_forward_passes"]
    assert b["backend_stats"]["forward_passes"] > 0  # the new adapter's own views
    assert b["resumed_from"] is None  # other work: not a resumption


def test_an_adapter_replaced_in_place_misses(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    adapter = scaled_adapter(tiny_model, tmp_path / "adapter", 1.0)
    spec = long_spec(tmp_path, tiny_model, adapter=adapter, probes=1, prompts=6)
    assert swayscope(tmp_path, "run", str(spec), "--json", "1.json").returncode in (0, 1)
    scaled_twice = scaled_adapter(tiny_model, tmp_path / "tmp-adapter", 2.0)
    for f in scaled_twice.iterdir():  # the same file names, new content
        (adapter / f.name).write_bytes(f.read_bytes())
    assert swayscope(tmp_path, "run", str(spec), "--json", "2.json").returncode in (0, 1)
    one, two = result(tmp_path / "1.json"), result(tmp_path / "2.json")
    assert two["backend_stats"]["base_forward_passes"] == 0  # the base did not change
    assert two["backend_stats"]["forward_passes"] == one["backend_stats"]["forward_passes"] - (
        one["backend_stats"]["base_forward_passes"]
    )
    assert two["probes"][0]["score"] != one["probes"][0]["score"]


def test_the_disk_cache_is_off_when_asked(tiny_model: TinyModelPaths, tmp_path: Path) -> None:
    spec = long_spec(tmp_path, tiny_model, probes=1, prompts=4)
    off = swayscope(tmp_path, "run", str(spec), "--json", "off.json", "--no-disk-cache")
    assert off.returncode in (0, 1), off.stderr[-2000:]
    assert not (tmp_path / "home" / "cache").exists()
    assert result(tmp_path / "off.json")["disk_cache"] == {}
    assert "disk cache:" not in off.stdout
    text = spec.read_text().replace("defaults:\n", "defaults:\n  cache_dir: null\n")
    spec.write_text(text)
    assert swayscope(tmp_path, "run", str(spec)).returncode in (0, 1)
    assert not (tmp_path / "home" / "cache").exists()
    spec.write_text(text.replace("cache_dir: null", "cache_dir: here/cache"))
    assert swayscope(tmp_path, "run", str(spec)).returncode in (0, 1)
    assert DiskCache(tmp_path / "here" / "cache").stats().entries > 0  # next to the spec
