"""Control adapters: the same shape as a trained LoRA, but nothing learned.

- **no-op**: peft's initialisation (random ``lora_A``, ``lora_B`` = 0), i.e. the
  checkpoint at step 0: it changes nothing.
- **random**: that initialisation's ``lora_A`` with a Gaussian ``lora_B`` whose
  root-mean-square equals the trained adapter's ``lora_B``, tensor by tensor: an
  update of the trained one's size in a direction nobody chose.

Both are real PEFT adapter folders a backend loads like the trained one.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from swayscope.errors import ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def control_seed(seed: int, tensor_name: str) -> int:
    """A 63-bit generator seed for one tensor, the same on every machine."""
    digest = hashlib.sha256(f"swayscope-random-lora\x1f{seed}\x1f{tensor_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def is_lora_b(tensor_name: str) -> bool:
    return ".lora_B." in tensor_name or ".lora_embedding_B" in tensor_name


def write_random_adapter(init_dir: Path, trained_dir: Path, out_dir: Path, *, seed: int) -> Path:
    """Write the **random** control adapter (see the module doc) to ``out_dir``.

    ``init_dir`` is the step-0 checkpoint (its ``lora_A`` is kept), ``trained_dir``
    the trained adapter (only the size of each ``lora_B`` is read).
    """
    import torch
    from safetensors.torch import load_file, save_file

    try:
        init = load_file(str(Path(init_dir) / ADAPTER_WEIGHTS))
        trained = load_file(str(Path(trained_dir) / ADAPTER_WEIGHTS))
    except OSError as exc:
        raise ModelLoadError(f"cannot read the adapters to build a random control: {exc}") from exc
    if set(init) != set(trained):
        raise ModelLoadError(
            f"adapters {str(init_dir)!r} and {str(trained_dir)!r} have different tensors; "
            "give the step-0 and the trained checkpoint of one training run"
        )
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sorted(init.items()):
        if not is_lora_b(name):
            out[name] = tensor.contiguous()
            continue
        rms = float(trained[name].float().pow(2).mean().sqrt())
        gen = torch.Generator().manual_seed(control_seed(seed, name))
        noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * rms
        out[name] = noise.to(tensor.dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(init_dir) / ADAPTER_CONFIG, out_dir / ADAPTER_CONFIG)
    save_file(out, str(out_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out_dir


__all__ = ["control_seed", "is_lora_b", "write_random_adapter"]
