"""Loading: settings, the base and adapter folders, and the PEFT model built from them.

Everything is offline (local folders only). The folders are checked before any
library is asked to load them, so a wrong path or a non-LoRA adapter is reported
in swayscope's words; after loading, the attached LoRA parameters are checked
against the adapter's stored tensors.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from swayscope.backends.hf.lora import ADAPTER, RANK_DIM, LoraSlot, collect_slots
from swayscope.errors import AdapterLoadError, ConfigError, ModelLoadError
from swayscope.instrumentation import BackendInstrumentation
from swayscope.instrumentation.disk_cache import NUMERIC_FORMAT

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
#: The weight files PEFT's ``save_pretrained`` writes (one of them).
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


# -- settings ---------------------------------------------------------------------------


def positive_int(name: str, value: int) -> int:
    """``value`` when it is an integer > 0, else :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:N]"`` as a device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]'; got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for but CUDA is not available; use device='cpu'"
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` (bfloat16 on CUDA, float32 on CPU) or a dtype name as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(
            f"dtype {dtype!r} is not supported; use 'auto', 'float32', 'bfloat16' or 'float16'"
        ) from None


# -- folders ----------------------------------------------------------------------------


def check_base(path: Path, gguf_file: str | None) -> tuple[Path, str | None]:
    """The base folder and GGUF file name (if any) that ``path``/``gguf_file`` name."""
    if gguf_file is None and path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(
                f"GGUF base model file {str(path)!r} does not exist; pass the path of a "
                "local .gguf file"
            )
        return path.parent, path.name
    if not path.is_dir():
        raise ModelLoadError(
            f"base model folder {str(path)!r} does not exist; pass a local folder with "
            "config.json, weights and tokenizer files (a test model: "
            "`swayscope tiny-model DIR`)"
        )
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelLoadError(
                f"GGUF file {gguf_file!r} is not in {str(path)!r}; pass the file name of a "
                ".gguf file inside the base folder"
            )
        return path, gguf_file
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"base model folder {str(path)!r} has no config.json; pass a transformers "
            "model folder (save_pretrained output) or a .gguf file"
        )
    return path, None


def check_adapter(path: Path) -> tuple[Path, dict[str, Any]]:
    """The adapter folder and its config, when it is a complete plain-LoRA PEFT adapter."""
    if not path.is_dir():
        raise AdapterLoadError(
            f"adapter folder {str(path)!r} does not exist; pass a local PEFT LoRA adapter "
            "folder (adapter_config.json + adapter_model.safetensors)"
        )
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdapterLoadError(
            f"adapter folder {str(path)!r} has no adapter_config.json; pass the folder "
            "written by PEFT's save_pretrained"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterLoadError(
            f"adapter config {str(cfg_path)!r} is not valid JSON ({exc}); re-save the adapter"
        ) from exc
    if not isinstance(cfg, dict):
        raise AdapterLoadError(f"adapter config {str(cfg_path)!r} is not a JSON object")
    peft_type = cfg.get("peft_type")
    if str(peft_type).upper() != "LORA":
        raise AdapterLoadError(
            f"adapter {str(path)!r} has peft_type {peft_type!r}, not 'LORA'; swayscope "
            "compares LoRA adapters only — pass a LoRA adapter folder"
        )
    if cfg.get("use_dora"):
        raise AdapterLoadError(
            f"adapter {str(path)!r} is a DoRA adapter (use_dora=true); only plain LoRA "
            "adapters are supported — pass a LoRA adapter without DoRA"
        )
    if not any((path / w).is_file() for w in ADAPTER_WEIGHTS):
        raise AdapterLoadError(
            f"adapter folder {str(path)!r} has no weights ({' or '.join(ADAPTER_WEIGHTS)}); "
            "pass the complete folder written by PEFT's save_pretrained"
        )
    return path, cfg


def adapter_content_hash(adapter_dir: Path) -> str:
    """SHA-256 of the adapter's config and weight files (what the adapter *is*)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", *ADAPTER_WEIGHTS):
        path = adapter_dir / name
        if not path.is_file():
            continue
        h.update(name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def base_identity(base_dir: Path, gguf_file: str | None, dtype: torch.dtype) -> str:
    """The base model's part of :func:`model_identity`: what the base view's cache keys
    name (they are shared by every adapter of the base)."""
    base_ident = str(base_dir.resolve()) + (f"/{gguf_file}" if gguf_file else "")
    return f"{base_ident}|{str(dtype).removeprefix('torch.')}"


#: Files of a base folder that never decide a model's numbers.
_NOT_MODEL_FILES = ("README", "LICENSE", "NOTICE", ".")


def base_fingerprint(
    base_dir: Path,
    gguf_file: str | None,
    dtype: torch.dtype,
    device: torch.device,
    digest: Callable[[Path], str],
) -> str:
    """A content digest of everything in the base that decides the numbers: each file of
    the folder (weights, config, tokenizer; of GGUF files only the one used), the dtype,
    the device kind and swayscope's numeric format. ``digest`` hashes one file (the disk
    cache's remembers each by path, size, mtime and inode, so a large model is read once)."""
    h = hashlib.sha256(
        f"base|{str(dtype).removeprefix('torch.')}|{device.type}|{NUMERIC_FORMAT}".encode()
    )
    for path in sorted(base_dir.iterdir()):
        name = path.name
        if not path.is_file() or name.startswith(_NOT_MODEL_FILES):
            continue
        if name.lower().endswith(".gguf") and name != gguf_file:
            continue
        h.update(f"\0{name}\0{digest(path)}".encode())
    return h.hexdigest()


def fingerprint_models(
    inst: BackendInstrumentation,
    base_id: str,
    model_id: str,
    base_dir: Path,
    gguf_file: str | None,
    dtype: torch.dtype,
    device: torch.device,
    adapter_hash: str,
) -> None:
    """Tell ``inst`` the content of the models its entries are keyed by (the base, and the
    base with the adapter), so they may go to its disk cache; nothing without one."""
    disk = inst.disk
    if disk is None:
        return
    base = base_fingerprint(base_dir, gguf_file, dtype, device, disk.file_digest)
    inst.fingerprint(base_id, base)
    inst.fingerprint(model_id, f"{base}@{adapter_hash}")


def model_identity(
    base_dir: Path, gguf_file: str | None, dtype: torch.dtype, adapter_hash: str
) -> str:
    """The id that joins every cache key: base path (and GGUF file), dtype, adapter content."""
    return f"{base_identity(base_dir, gguf_file, dtype)}@{adapter_hash[:16]}"


# -- the model --------------------------------------------------------------------------


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars and no warnings while transformers and PEFT load."""
    from transformers.utils import logging as hf_logging_module

    hf_logging: Any = hf_logging_module  # untyped functions
    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if progress:
            hf_logging.enable_progress_bar()


def import_stack() -> None:
    """Import what loading a model needs (transformers' model machinery, PEFT) now, so a
    caller can choose when the imports' cost is paid."""
    import peft  # noqa: F401
    import transformers.modeling_utils  # noqa: F401


#: ``tokenizer_class`` values of a tokenizer that is its ``tokenizer.json`` and nothing more.
_PLAIN_TOKENIZERS = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})


def _json_field(path: Path, *keys: str | int) -> Any:
    """``data[k0][k1]...`` of the JSON file at ``path``; None when any part is missing."""
    try:
        value: Any = json.loads(path.read_text(encoding="utf-8"))
        for key in keys:
            value = value[key]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return value


def tokenizer_class(base_path: Path, gguf_file: str | None) -> Any:
    """``PreTrainedTokenizerFast`` for a folder whose tokenizer is plainly its
    ``tokenizer.json`` (no tokenizer module to find and import), else ``AutoTokenizer``."""
    plain = (
        gguf_file is None
        and (base_path / "tokenizer.json").is_file()
        and _json_field(base_path / "tokenizer_config.json", "tokenizer_class")
        in _PLAIN_TOKENIZERS
    )
    if plain:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast
    from transformers import AutoTokenizer

    return AutoTokenizer


def model_class(base_path: Path, gguf_file: str | None) -> Any:
    """The ``*ForCausalLM`` class ``config.json`` names, imported on its own (transformers
    imports model modules lazily), else ``AutoModelForCausalLM`` (GGUF files, custom or
    unknown architectures)."""
    arch = None if gguf_file else _json_field(base_path / "config.json", "architectures", 0)
    if isinstance(arch, str) and arch.endswith("ForCausalLM"):
        import transformers

        try:
            cls = getattr(transformers, arch, None)
        except Exception:  # a model module that fails to import: let the auto class explain
            cls = None
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def _tokenizer(base_path: Path, gguf_file: str | None) -> Any:
    gguf_kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return tokenizer_class(base_path, gguf_file).from_pretrained(
            str(base_path), local_files_only=True, **gguf_kw
        )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer from {str(base_path)!r}: "
            f"{type(exc).__name__}: {exc}. The base folder needs tokenizer files "
            "(tokenizer.json or the GGUF's vocabulary)"
        ) from exc


def load_tokenizer(base_path: Path, gguf_file: str | None) -> Any:
    """The base model's tokenizer alone (a driver whose workers hold the model needs only
    this)."""
    with quiet_transformers():
        return _tokenizer(base_path, gguf_file)


def load_model(
    base_path: Path,
    gguf_file: str | None,
    adapter_path: Path,
    *,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Any, Any]:
    """The tokenizer and the frozen, eval-mode PEFT model (base + adapter) on ``device``."""
    gguf_kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    with quiet_transformers():
        tokenizer = _tokenizer(base_path, gguf_file)
        try:
            base = model_class(base_path, gguf_file).from_pretrained(
                str(base_path), dtype=dtype, local_files_only=True, **gguf_kw
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the base model from {str(base_path)!r}: "
                f"{type(exc).__name__}: {exc}. Pass a causal-LM folder saved with "
                "transformers (or a .gguf file)"
            ) from exc
        model = _attach_adapter(base, adapter_path, base_path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.to(device)
    return tokenizer, model


def check_fits(base_path: Path, gguf_file: str | None, adapter_path: Path) -> None:
    """:class:`AdapterLoadError` unless ``adapter_path`` attaches to the base model, found
    without loading the base: PEFT attaches it to the base's skeleton (its modules built
    from its config on the meta device; no weight of the base is read). A sweep checks
    its adapters so until one fits, and loads the base once, with that one.

    A base whose config does not read is left to the load, which says why.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    check_adapter(adapter_path)
    gguf_kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(str(base_path), local_files_only=True, **gguf_kw)
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        except Exception:
            return
        model = _attach_adapter(skeleton, adapter_path, base_path)
    check_attached(collect_slots(model), adapter_path, base_path)


def _check_targets(base: Any, adapter_path: Path, base_path: Path) -> None:
    """:class:`AdapterLoadError` unless the adapter's config reads and its target modules
    are in ``base``."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    try:
        lora_cfg = LoraConfig.from_pretrained(str(adapter_path))
    except Exception as exc:
        raise AdapterLoadError(
            f"cannot read the LoRA config in {str(adapter_path)!r}: "
            f"{type(exc).__name__}: {exc}; re-save the adapter with PEFT"
        ) from exc
    targets = lora_cfg.target_modules
    if targets is not None and targets != "all-linear":
        names = [n for n, _ in base.named_modules() if n]
        if not any(check_target_module_exists(lora_cfg, n) for n in names):
            shown = sorted(targets) if isinstance(targets, (set, list)) else targets
            raise AdapterLoadError(
                f"adapter {str(adapter_path)!r} targets modules {shown!r}, which are not "
                f"in the base model {str(base_path)!r}; pass the adapter trained for this "
                "base model"
            )


def _attach_failed(exc: Exception, adapter_path: Path, base_path: Path) -> AdapterLoadError:
    return AdapterLoadError(
        f"cannot attach adapter {str(adapter_path)!r} to base model "
        f"{str(base_path)!r}: {type(exc).__name__}: {exc}. Was it trained for "
        "this base model?"
    )


def _attach_adapter(base: Any, adapter_path: Path, base_path: Path) -> Any:
    from peft import PeftModel

    _check_targets(base, adapter_path, base_path)
    try:
        return PeftModel.from_pretrained(
            base, str(adapter_path), adapter_name=ADAPTER, is_trainable=False
        )
    except Exception as exc:
        raise _attach_failed(exc, adapter_path, base_path) from exc


# -- swapping the adapter ---------------------------------------------------------------


def _load_in_place(model: Any, adapter_path: Path, base_path: Path, device: torch.device) -> None:
    """Attach ``adapter_path`` as the model's adapter (none attached), frozen, in eval mode."""
    with quiet_transformers():
        try:
            model.load_adapter(
                str(adapter_path), adapter_name=ADAPTER, is_trainable=False,
                torch_device=str(device),
            )
        except Exception as exc:
            raise _attach_failed(exc, adapter_path, base_path) from exc
    model.set_adapter(ADAPTER)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _detach(model: Any) -> None:
    if ADAPTER in model.peft_config:
        model.delete_adapter(ADAPTER)


def replace_adapter(
    model: Any, adapter_path: Path, previous: Path, base_path: Path, device: torch.device
) -> None:
    """Put ``adapter_path`` in place of the attached adapter (``previous``), with peft's
    public ``delete_adapter``/``load_adapter``: the base model is not loaded again.

    When it cannot be attached, ``previous`` is attached again and
    :class:`AdapterLoadError` says why.
    """
    _check_targets(model.get_base_model(), adapter_path, base_path)
    _detach(model)
    try:
        _load_in_place(model, adapter_path, base_path, device)
        check_attached(collect_slots(model), adapter_path, base_path)
    except BaseException:
        _detach(model)
        _load_in_place(model, previous, base_path, device)
        raise


def check_attached(slots: Sequence[LoraSlot], adapter_path: Path, base_path: Path) -> None:
    """:class:`ModelLoadError` unless every stored LoRA tensor found its module."""
    if not slots:
        raise AdapterLoadError(
            f"adapter {str(adapter_path)!r} attached no LoRA layer to the base model; "
            "pass the adapter trained for this base model"
        )
    stored = _stored_lora_tensors(adapter_path)
    if stored is not None and stored != len(slots):
        raise AdapterLoadError(
            f"adapter {str(adapter_path)!r} holds {stored} LoRA tensors but {len(slots)} "
            f"LoRA parameters were attached to base model {str(base_path)!r}; some of "
            "its weights match no module (or some modules got no weights) — pass the adapter "
            "trained for this base model"
        )


def _stored_lora_tensors(adapter_path: Path) -> int | None:
    """How many LoRA A/B tensors the adapter's safetensors file holds (None: unknown)."""
    path = adapter_path / "adapter_model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
    except Exception as exc:
        raise AdapterLoadError(
            f"adapter weights {str(path)!r} are not a readable safetensors file ({exc}); "
            "re-save the adapter"
        ) from exc
    families = tuple(f".{family}." for family in RANK_DIM)
    return sum(1 for k in keys if any(f in k for f in families))


__all__ = [
    "ADAPTER_WEIGHTS",
    "adapter_content_hash",
    "base_identity",
    "check_adapter",
    "check_attached",
    "check_base",
    "import_stack",
    "load_model",
    "load_tokenizer",
    "model_class",
    "model_identity",
    "positive_int",
    "quiet_transformers",
    "replace_adapter",
    "resolve_device",
    "resolve_dtype",
    "tokenizer_class",
]
