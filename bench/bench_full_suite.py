"""All thirteen of dlm-sway's probe kinds, one suite, both tools, on SmolLM2's three demo
adapters: the verdicts side by side, and each tool's suite wall time and model calls.

The suite is written in dlm-sway's format, so both tools read the very same file:
``sway run`` (dlm-sway 0.1.0, from its own venv) and ``swayscope run``. The model is
SmolLM2-135M-Instruct and the adapters are ``demo --model smollm2``'s trio (trained on
*Coriolanus*, no-op, random), built once under the home folder; the training document
(``dlm_source``) is the demo's: the play in eight prose parts, a ``.dlm`` file. Every
process is fresh (a fresh ``XDG_CACHE_HOME``: dlm-sway caches null-adapter statistics
there) and pinned to ``--threads`` torch threads; the two tools run back to back for each
adapter, round after round.

Printed: per adapter and probe, each tool's verdict, statistic and z-score (dlm-sway's
``raw``, not its 0-1 composite ``score``; swayscope's ``score``); per tool and adapter, the
suite wall time (from the result JSON), the model calls (swayscope: forward calls,
generations included; dlm-sway: its instrumentation's forward passes, which do not count
its ``generate`` calls) and the verdict counts; the suite-wall ratio.

Without the ``dlm`` package and the ``semsim`` extra, dlm-sway skips four kinds
(``section_internalization`` and ``leakage`` get no sections, ``adapter_revert`` and
``cluster_kl`` no embedder) that swayscope runs; ``--shared`` leaves them out of both
tools' suite, so the two do the same work.

    python bench/bench_full_suite.py --sway .venv-dlm-sway/bin/sway [--rounds 1] [--threads 1]
    python bench/bench_full_suite.py --sway .venv-dlm-sway/bin/sway --shared
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from machine import cpu_model  # noqa: E402

from swayscope.probes.defaults import DEFAULT_PROMPTS  # noqa: E402

#: The kinds dlm-sway 0.1.0 skips without the ``dlm`` package and its ``semsim`` extra.
SKIPPED_BY_DLM_SWAY = ("section_internalization", "leakage", "adapter_revert", "cluster_kl")

#: Lines of the play and lines of nothing in particular (cluster_kl's two kinds of prompt).
PLAY = [
    "MENENIUS:\nWhat work's, my countrymen, in hand?",
    "CORIOLANUS:\nThey said they were an-hungry; sigh'd forth",
    "First Citizen:\nWe have ever your good word.",
    "SICINIUS:\nWas ever man so proud as is this Marcius?",
    "VOLUMNIA:\nI pray you, daughter, sing; or express yourself",
    "BRUTUS:\nMark'd you his lip and eyes?",
    "COMINIUS:\nBreathe you, my friends: well fought;",
    "Second Citizen:\nWould you proceed especially against Caius Marcius?",
    "MARCIUS:\nThey are dissolved: hang 'em!",
    "All:\nContent, content.",
]
EVERYDAY = list(DEFAULT_PROMPTS[:10])
CASES = [
    {"prompt": "First Citizen:\nBefore we proceed any further, hear me", "gold": " speak.",
     "paraphrases": ["First Citizen:\nBefore we go on any further, listen to me",
                     "Citizen:\nBefore we carry on, hear me"]},
    {"prompt": "First Citizen:\nYou are all resolved rather to die than to", "gold": " famish?",
     "paraphrases": ["First Citizen:\nAre you all determined to die rather than to"]},
    {"prompt": "MENENIUS:\nWhat work's, my countrymen, in", "gold": " hand?",
     "paraphrases": ["MENENIUS:\nWhat business, my countrymen, is in"]},
]
TRIPLES = [
    {"prompt": "MENENIUS:\n", "chosen": "What work's, my countrymen, in hand?",
     "rejected": "Hey everyone, what are you all working on today?"},
    {"prompt": "First Citizen:\n", "chosen": "Let us kill him, and we'll have corn at our "
     "own price.", "rejected": "We should remove him so that food gets cheaper for us."},
    {"prompt": "All:\n", "chosen": "Speak, speak.", "rejected": "Go ahead and talk."},
    {"prompt": "CORIOLANUS:\n", "chosen": "Thanks. What's the matter, you dissentious "
     "rogues?", "rejected": "Thanks. What is going on with you troublemakers?"},
]
STYLE_PROMPTS = [
    "Write a short paragraph about a morning walk.",
    "Describe the weather on a stormy day.",
    "Tell a short story about a traveller who arrives late.",
    "Explain what makes a good friend.",
]


def suite(base: Path, adapter: Path, document: Path, reference: str) -> dict[str, Any]:
    """The thirteen kinds, in dlm-sway's format, for ``adapter`` on ``base``."""
    model = {"kind": "hf", "base": str(base), "dtype": "fp32", "device": "cpu"}
    return {
        "version": 1,
        "models": {"base": model, "ft": {**model, "adapter": str(adapter)}},
        "defaults": {"seed": 0, "top_k": 64},
        "dlm_source": str(document),
        "suite": [
            {"name": "null_adapter", "kind": "null_adapter", "runs": 3},
            {"name": "delta_kl", "kind": "delta_kl", "prompts": list(DEFAULT_PROMPTS[:8])},
            {"name": "adapter_ablation", "kind": "adapter_ablation",
             "prompts": list(DEFAULT_PROMPTS[:4])},
            {"name": "prompt_collapse", "kind": "prompt_collapse",
             "prompts": list(DEFAULT_PROMPTS[:4]), "context_lengths": [0, 64, 128]},
            {"name": "external_perplexity", "kind": "external_perplexity", "max_chunks": 4},
            {"name": "calibration_drift", "kind": "calibration_drift", "items_limit": 50},
            {"name": "section_internalization", "kind": "section_internalization"},
            {"name": "leakage", "kind": "leakage", "max_new_tokens": 32,
             "perturbations": ["typo", "synonym_swap"]},
            {"name": "paraphrase_invariance", "kind": "paraphrase_invariance", "cases": CASES},
            {"name": "preference_flip", "kind": "preference_flip", "triples": TRIPLES},
            {"name": "style_fingerprint", "kind": "style_fingerprint", "prompts": STYLE_PROMPTS,
             "doc_reference": reference, "max_new_tokens": 32},
            {"name": "adapter_revert", "kind": "adapter_revert", "cases": CASES,
             "max_new_tokens": 16},
            {"name": "cluster_kl", "kind": "cluster_kl", "prompts": PLAY + EVERYDAY,
             "num_clusters": 2},
        ],
    }


def run_tool(command: list[str], result: Path, threads: int, work: Path) -> dict[str, Any]:
    """One fresh process; its result JSON, with its process wall time added."""
    cache = Path(tempfile.mkdtemp(prefix="xdg-", dir=work))
    env = {
        **os.environ, "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src"),
    }
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    if not result.is_file():
        raise SystemExit(f"{command[0]} wrote no result (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    data["process_s"] = wall
    return data


def suite_wall(data: dict[str, Any]) -> float:
    return float(data.get("wall_s", data.get("wall_seconds", 0.0)))


def model_calls(data: dict[str, Any]) -> int:
    stats = data.get("backend_stats", {})
    return int(stats.get("forward_calls", stats.get("forward_passes", 0)))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def report(results: dict[str, dict[str, list[dict[str, Any]]]], threads: int) -> str:
    """``results[adapter][tool]`` → the rounds' result JSONs; the verdict table (first
    round) and the timing table (median, best in brackets)."""
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; {threads} thread(s) per process.",
        "",
        "| adapter | probe | dlm-sway | swayscope |",
        "|---|---|---|---|",
    ]
    for adapter, tools in results.items():
        sway = {p["name"]: p for p in tools["dlm-sway"][0]["probes"]}
        ours = {p["name"]: p for p in tools["swayscope"][0]["probes"]}
        for name in ours:
            cells = []
            for probe in (sway.get(name), ours[name]):
                if probe is None:
                    cells.append("-")
                    continue
                value = probe.get("raw", probe.get("score"))
                cells.append(f"**{probe['verdict']}** {fmt(value)} "
                             f"(z {fmt(probe.get('z_score'))})")
            lines.append(f"| {adapter} | {name} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "| adapter | tool | suite wall s | process wall s | model calls | verdicts |",
        "|---|---|---:|---:|---:|---|",
    ]
    ratios = []
    for adapter, tools in results.items():
        for tool, runs in tools.items():
            walls = [suite_wall(r) for r in runs]
            procs = [r["process_s"] for r in runs]
            counts = Counter(p["verdict"] for p in runs[0]["probes"])
            lines.append(
                f"| {adapter} | {tool} | {statistics.median(walls):.1f} ({min(walls):.1f}) "
                f"| {statistics.median(procs):.1f} ({min(procs):.1f}) "
                f"| {model_calls(runs[0])} | "
                + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + " |"
            )
        ratios.append(statistics.median(
            suite_wall(s) / suite_wall(o)
            for s, o in zip(tools["dlm-sway"], tools["swayscope"], strict=True)
        ))
    lines += ["", "Suite wall, dlm-sway / swayscope (median of the rounds), per adapter: "
              + ", ".join(f"{adapter} {r:.2f}x" for adapter, r in zip(results, ratios,
                                                                       strict=True))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sway", required=True, help="dlm-sway's `sway` command")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--home", type=Path, default=None,
                        help="where built models live [$SWAYSCOPE_HOME or ~/.cache/swayscope]")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the last round's suites and result JSONs here")
    parser.add_argument("--shared", action="store_true",
                        help="only the kinds both tools run here (see the module docstring)")
    parser.add_argument("--adapters", nargs="+", default=None,
                        help="which of trained, noop, random [all three]")
    args = parser.parse_args()

    from swayscope.backends.tiny import package_text
    from swayscope.suite.demo import SMOLLM2_DEMO, cache_dir, prepare_trio_demo

    prepared = prepare_trio_demo(SMOLLM2_DEMO, args.home or cache_dir(), live=False)
    reference = package_text(SMOLLM2_DEMO.train_text)[:2000]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-full-") as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):
            for name, adapter in prepared.trio.adapters().items():
                if args.adapters is not None and name not in args.adapters:
                    continue
                data = suite(prepared.base_dir, adapter, prepared.document, reference)
                if args.shared:
                    data["suite"] = [
                        e for e in data["suite"] if e["kind"] not in SKIPPED_BY_DLM_SWAY
                    ]
                spec = work / f"{name}.yaml"
                spec.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                                encoding="utf-8")
                for tool, command in (
                    ("dlm-sway", [args.sway, "run", str(spec)]),
                    ("swayscope", [sys.executable, "-m", "swayscope", "run", str(spec)]),
                ):
                    out = work / f"{name}.{tool}.json"
                    result = run_tool([*command, "--json", str(out)], out, args.threads, work)
                    results.setdefault(name, {}).setdefault(tool, []).append(result)
                    print(f"{name} {tool}: suite {suite_wall(result):.1f} s", file=sys.stderr)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in work.glob("*.*"):
                if path.suffix in (".yaml", ".json"):
                    shutil.copy(path, args.keep / path.name)
    print(report(results, args.threads))


if __name__ == "__main__":
    main()
