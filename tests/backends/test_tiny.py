"""build_tiny: offline, deterministic, idempotent; its adapter measurably changes the model."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from swayscope.backends.api import TokenDist
from swayscope.backends.hf import HFBackend
from swayscope.backends.tiny import (
    ADAPTER_DIRNAME,
    ADAPTER_STEPS,
    BASE_DIRNAME,
    CHECKPOINTS_DIRNAME,
    MARKER,
    TinyModelPaths,
    build_tiny,
    checkpoint_steps,
    package_text,
)
from swayscope.errors import ConfigError

PROMPTS = [
    "The morning was",
    "The lamp was lit at",
    "In the village there was a",
    "Keeper's log. Fog",
    "A model of language is",
    "The cat slept on the",
    "Numbers are useful for",
    "The ship left the",
    "What is the capital of",
    "Good writing is",
]
FILES = [
    f"{BASE_DIRNAME}/config.json",
    f"{BASE_DIRNAME}/model.safetensors",
    f"{BASE_DIRNAME}/tokenizer.json",
    f"{BASE_DIRNAME}/tokenizer_config.json",
    f"{ADAPTER_DIRNAME}/adapter_config.json",
    f"{ADAPTER_DIRNAME}/adapter_model.safetensors",
]


def _probs(d: TokenDist) -> np.ndarray:
    p = np.zeros(d.vocab_size)
    p[d.token_ids] = np.exp(d.logprobs)
    return p


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def test_layout_and_marker(tiny_model: TinyModelPaths) -> None:
    root = tiny_model.base_dir.parent
    assert tiny_model.base_dir == root / BASE_DIRNAME
    assert tiny_model.adapter_dir == root / ADAPTER_DIRNAME
    for name in FILES:
        assert (root / name).is_file(), name
    assert json.loads((root / MARKER).read_text())["seed"] == 0
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".tiny-build-")]
    assert not leftovers


def test_idempotent_and_fast_when_built(tiny_model: TinyModelPaths) -> None:
    root = tiny_model.base_dir.parent
    mtimes = {n: (root / n).stat().st_mtime_ns for n in FILES}
    t0 = time.perf_counter()
    again = build_tiny(root, seed=0)
    assert time.perf_counter() - t0 < 0.5
    assert again == tiny_model
    assert {n: (root / n).stat().st_mtime_ns for n in FILES} == mtimes


def test_deterministic_for_a_seed_and_rebuilt_for_another(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    root = tiny_model.base_dir.parent
    threads = torch.get_num_threads()
    rng_state = torch.random.get_rng_state()
    t0 = time.perf_counter()
    copy = build_tiny(tmp_path / "again", seed=0)
    assert time.perf_counter() - t0 < 30, "builds in seconds"
    assert torch.get_num_threads() == threads, "the thread count is restored"
    assert torch.equal(torch.random.get_rng_state(), rng_state), "global RNG untouched"
    for name in FILES:
        assert (copy.base_dir.parent / name).read_bytes() == (root / name).read_bytes(), name
    other = build_tiny(tmp_path / "again", seed=1)  # same folder, other seed: replaced
    assert json.loads((tmp_path / "again" / MARKER).read_text())["seed"] == 1
    assert (other.adapter_dir / "adapter_model.safetensors").read_bytes() != (
        root / FILES[-1]
    ).read_bytes()


def test_bad_arguments(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"file\.txt.*is not a folder"):
        build_tiny(a_file)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer; got -1"):
        build_tiny(tmp_path / "m", seed=-1)


def test_tokenizer_and_model_load_with_transformers(tiny_model: TinyModelPaths) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model.base_dir), local_files_only=True)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert 512 <= len(tok) <= 1024
    ids = tok("The lamp was lit at sunset.")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "The lamp was lit at sunset."
    assert tok.decode(tok("naïve café ✓")["input_ids"], skip_special_tokens=True) == "naïve café ✓"
    cfg = AutoConfig.from_pretrained(str(tiny_model.base_dir), local_files_only=True)
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 2
    adapter = json.loads((tiny_model.adapter_dir / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert set(adapter["target_modules"]) >= {"q_proj", "v_proj"}


def test_adapter_has_nonzero_b(tiny_model: TinyModelPaths) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(tiny_model.adapter_dir / "adapter_model.safetensors"))
    b = [t for k, t in weights.items() if "lora_B" in k]
    assert b and all(float(t.abs().max()) > 0 for t in b)


def test_packaged_text() -> None:
    passage = package_text("perplexity.txt")
    assert 1000 <= len(passage.encode()) <= 2048
    assert len(package_text("corpus.txt")) > 5000


def test_adapter_divergence_far_above_null_adapters(tiny_model: TinyModelPaths) -> None:
    b = HFBackend(tiny_model.base_dir, tiny_model.adapter_dir, device="cpu", max_top_k=1024)

    def dists(view_cm: object) -> list[np.ndarray]:
        with view_cm as v:  # type: ignore[attr-defined]
            return [_probs(d) for d in v.next_token_dist_batch(PROMPTS, top_k=1024)]

    base = dists(b.base())
    ft = dists(b.ft())
    ft_js = float(np.mean([_js(p, q) for p, q in zip(base, ft, strict=True)]))
    null_js = [
        float(np.mean([_js(p, q) for p, q in zip(base, dists(b.null(s)), strict=True)]))
        for s in range(3)
    ]
    assert ft_js > 0.02, ft_js
    assert max(null_js) * 10 < ft_js, (ft_js, null_js)
    # the base is a (weak) language model, not uniform noise
    entropy = float(np.mean([-(p[p > 0] * np.log(p[p > 0])).sum() for p in base]))
    assert entropy < math.log(1024) - 0.5
    # fine-tuning on the keeper's log makes that text more likely
    log = "Keeper's log. The lamp was lit at sunset. Wind from the west, light. Sea calm."
    with b.base() as v:
        base_ppl = v.rolling_logprob(log).perplexity
    with b.ft() as v:
        ft_ppl = v.rolling_logprob(log).perplexity
    assert ft_ppl < base_ppl


def test_checkpoint_steps_are_dense_early_and_end_at_the_last_step() -> None:
    assert ADAPTER_STEPS == 40
    assert checkpoint_steps(5) == (0, 5, 10, 20, 40)
    assert checkpoint_steps(1) == (40,)
    assert checkpoint_steps(2) == (0, 40)
    assert checkpoint_steps(7) == (0, 1, 2, 5, 10, 20, 40)
    # Halving would repeat a step: evenly spaced instead.
    assert checkpoint_steps(9) == (0, 5, 10, 15, 20, 25, 30, 35, 40)
    assert checkpoint_steps(41) == tuple(range(41))
    for bad in (0, 42, True, 2.0):
        with pytest.raises(ConfigError, match="checkpoints must be a whole number from 1 to 41"):
            checkpoint_steps(bad)  # type: ignore[arg-type]


def test_tiny_model_checkpoints_and_their_suite(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    """``tiny-model DIR --checkpoints N``: the adapter's own training, N checkpoints kept
    (the last is the adapter build_tiny wrote, byte for byte), a suite that sweeps them;
    a second call with another N replaces them."""
    from typer.testing import CliRunner

    from swayscope.cli import app
    from swayscope.suite.spec import load_suite

    root = tmp_path / "tiny"
    shutil.copytree(tiny_model.base_dir.parent, root)
    res = CliRunner().invoke(app, ["tiny-model", str(root), "--checkpoints", "3"])
    assert res.exit_code == 0, res.output
    folder = root / CHECKPOINTS_DIRNAME
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000", "step-00020", "step-00040"]
    final = folder / "step-00040" / "adapter_model.safetensors"
    assert final.read_bytes() == (
        tiny_model.adapter_dir / "adapter_model.safetensors").read_bytes()
    assert "steps 0, 20, 40" in res.output
    loaded = load_suite(root / "suite.yaml")
    assert loaded.spec.models.base == root / BASE_DIRNAME
    assert loaded.spec.sweep is not None
    assert loaded.spec.sweep.adapters == [str(root / CHECKPOINTS_DIRNAME / "step-*")]

    res = CliRunner().invoke(app, ["tiny-model", str(root), "--checkpoints", "2"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000", "step-00040"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging left

    res = CliRunner().invoke(app, ["tiny-model", str(tmp_path / "new"), "--checkpoints", "0"])
    assert res.exit_code == 2
    assert "--checkpoints: checkpoints must be a whole number from 1 to 41" in res.output
    assert not (tmp_path / "new").exists()  # refused before anything was built
