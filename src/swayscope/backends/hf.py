"""Transformers + PEFT differential backend: one base model, one LoRA adapter, many views.

The base model is loaded once and the LoRA adapter attached once (offline, local
folders only). Views never copy or rewrite the base weights:

- ``base`` — the LoRA layers are switched off (``scaled(0)`` *is* this view);
- ``ft`` — the adapter as trained (``scaled(1)`` *is* this view);
- ``scaled(λ)`` — every LoRA layer's ``scaling`` multiplied by λ; the saved
  floats are written back on exit, so restoration is exact;
- ``null(seed, init_scale, rank_scale)`` — a random LoRA of the adapter's shape
  (see :meth:`HFBackend.null`): its tensors are generated once per id from
  ``torch.Generator`` on the CPU (identical across processes), kept, and swapped
  in place of the adapter's ``lora_A``/``lora_B`` parameters while the view is
  active; the adapter's own parameter objects are put back on exit.

Every scoring op goes through the instrumentation core and shares one cached
*forward record* per (view, text): the last position's top ``max_top_k``
distribution plus the log-probability of every token. ``next_token_dist``,
``rolling_logprob`` and ``logprob_of`` are all answered from it, so asking a
second op about the same text costs no forward pass, and a small ``top_k`` is
sliced from the cached record. Misses are packed into forward calls under a
token budget and a batch-size cap, sorted by length, left-padded with an
attention mask and matching ``position_ids``. An out-of-memory batch is split in
half and retried (``inst.stats.oom_splits``).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "swayscope.backends.hf needs torch, transformers and peft; "
        "install them with: pip install 'swayscope[hf]'"
    ) from _exc

from swayscope.backends.api import (
    DEFAULT_TOP_K,
    RollingLogprob,
    TokenDist,
    ViewIdentity,
    check_text,
    check_top_k,
    null_view_id,
    scaled_view_id,
)
from swayscope.errors import BackendError, ConfigError, InputError, ModelLoadError, ViewError
from swayscope.instrumentation import BackendInstrumentation, BatchPlanner

#: The cache op every scoring op of this backend is stored under (one record per text).
FORWARD_OP = "forward"
#: Adapter name the real LoRA adapter is attached under in the PEFT model.
ADAPTER = "default"

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
#: LoRA parameter families and the dimension that holds the rank.
_RANK_DIM = {"lora_A": 0, "lora_embedding_A": 0, "lora_B": 1, "lora_embedding_B": 1}


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """What one forward pass over one text yields; every op is answered from it."""

    dist: TokenDist
    """Next-token distribution after the whole text, top ``max_top_k``."""
    rolling: RollingLogprob
    """Log-probability of every token given the ones before it."""

    @property
    def n_tokens(self) -> int:
        return self.rolling.n_tokens


@dataclass(slots=True)
class _Slot:
    """One LoRA parameter of the real adapter that a null adapter replaces."""

    module_name: str
    layer: Any
    family: str
    param: torch.nn.Parameter


@dataclass(slots=True)
class _NullAdapter:
    view_id: str
    params: list[torch.nn.Parameter]
    """One replacement per slot, in slot order."""


def _resolve_device(device: str | torch.device) -> torch.device:
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


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
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


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def _derived_seed(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def adapter_content_hash(adapter_dir: Path) -> str:
    """SHA-256 of the adapter's config and weight files (what the adapter *is*)."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", *_ADAPTER_WEIGHTS):
        path = adapter_dir / name
        if not path.is_file():
            continue
        h.update(name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")


def plan_batches(
    lengths: dict[int, int],
    *,
    max_batch_size: int,
    max_batch_tokens: int,
    call_overhead_tokens: int,
) -> list[list[int]]:
    """Split texts (index -> token count) into forward calls, shortest texts first.

    Texts are sorted by length and cut into contiguous groups of at most
    ``max_batch_size`` texts whose padded size (texts x longest) stays within
    ``max_batch_tokens`` (a longer text goes alone). Among those cuts it picks the
    one with the least cost, counting each call as ``call_overhead_tokens`` plus
    its padded tokens: one big call when lengths are alike, a few calls when
    padding the short texts to the long ones would cost more than an extra call.
    """
    order = sorted(lengths, key=lambda i: (lengths[i], i))
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j texts
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j - 1, max(0, j - max_batch_size) - 1, -1):
            size = j - i
            if size > 1 and size * longest > max_batch_tokens:
                break
            cost = best[i] + call_overhead_tokens + size * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


class HFView(ViewIdentity):
    """One view of the PEFT model; every scoring method goes through the core."""

    def __init__(self, backend: HFBackend, view_id: str) -> None:
        self._b = backend
        self._inst = backend.inst
        self._id = view_id
        self._live = True

    def _check_live(self) -> None:
        if not self._live or self._b._active is not self:
            raise ViewError(
                f"view {self._id!r} is not active (its `with` block has ended); "
                f"score inside `with backend.<view>() as view:`"
            )

    # -- glue into the core --------------------------------------------------------

    def _record(self, op: str, text: str, top_k: int) -> ForwardRecord:
        self._check_live()
        b = self._b
        record: ForwardRecord = self._inst.cached(
            op,
            self._id,
            text,
            top_k,
            lambda: b._compute([b._checked_ids(text)])[0],
            key_op=FORWARD_OP,
            key_top_k=b.max_top_k,
        )
        return record

    def _records(self, op: str, texts: Sequence[str], top_k: int) -> list[ForwardRecord]:
        self._check_live()
        b = self._b
        ids: dict[int, list[int]] = {}

        def compute(indices: list[int]) -> list[Any]:
            return list(b._compute([ids.get(i) or b._checked_ids(texts[i]) for i in indices]))

        return self._inst.cached_batch(
            op,
            self._id,
            texts,
            top_k,
            compute,
            key_op=FORWARD_OP,
            key_top_k=b.max_top_k,
            plan=b._planner(texts, ids),
        )

    # -- scoring ----------------------------------------------------------------------

    def next_token_dist(self, prompt: str, *, top_k: int = DEFAULT_TOP_K) -> TokenDist:
        check_text(prompt)
        self._b._check_top_k(top_k)
        return self._record("next_token_dist", prompt, top_k).dist.truncate(top_k)

    def rolling_logprob(self, text: str) -> RollingLogprob:
        check_text(text, "text")
        return self._record("rolling_logprob", text, 0).rolling

    def logprob_of(self, prompt: str, completion: str) -> float:
        start = self._b._completion_start(prompt, completion)
        record = self._record("logprob_of", prompt + completion, 0)
        return float(record.rolling.logprobs[start - 1 :].sum())

    def next_token_dist_batch(
        self, prompts: Sequence[str], *, top_k: int = DEFAULT_TOP_K
    ) -> list[TokenDist]:
        self._b._check_top_k(top_k)
        for p in prompts:
            check_text(p)
        return [r.dist.truncate(top_k) for r in self._records("next_token_dist", prompts, top_k)]

    def rolling_logprob_batch(self, texts: Sequence[str]) -> list[RollingLogprob]:
        for t in texts:
            check_text(t, "text")
        return [r.rolling for r in self._records("rolling_logprob", texts, 0)]

    def logprob_of_batch(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        starts = [self._b._completion_start(p, c) for p, c in pairs]
        records = self._records("logprob_of", [p + c for p, c in pairs], 0)
        return [
            float(r.rolling.logprobs[s - 1 :].sum()) for r, s in zip(records, starts, strict=True)
        ]


class HFBackend:
    """A local base model and a local PEFT LoRA adapter, seen through views.

    Args:
        base_path: a folder with ``config.json``, weights and tokenizer files, or a
            ``.gguf`` file (or the folder holding ``gguf_file``), loaded with
            transformers' ``gguf_file=`` support.
        adapter_path: a PEFT LoRA adapter folder (``adapter_config.json`` +
            ``adapter_model.safetensors``).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``,
            ``"bfloat16"``, ``"float16"``.
        max_top_k: the top-k every forward record keeps; larger ``top_k`` requests
            are refused unless the vocabulary is smaller.
        max_batch_tokens: token budget of one forward call (batch size times longest text,
            padding included); a text longer than the budget goes alone.
        max_batch_size: at most this many texts per forward call.
        inst: the instrumentation to use; when omitted one is built from
            ``inst_kwargs`` (``trace_path``, ``exporters``, ``cache_maxsize`` …).
        seed: seeds torch's global RNG at load time (scoring draws no random
            numbers; null adapters have their own seeds).
        gguf_file: name of a ``.gguf`` file inside ``base_path``.
        model_name: reported as ``gen_ai.request.model``; defaults to the base
            folder's (or GGUF file's) name.
        max_null_adapters: null adapters kept in memory (least recently used
            beyond this are dropped and rebuilt identically when asked for again).
        call_overhead_tokens: what one extra forward call costs, in padded tokens,
            when the batcher weighs padding against more calls; by default guessed
            from the model's layers and parameters and the device
            (:meth:`_default_call_overhead`); 0 minimises padding.
    """

    def __init__(
        self,
        base_path: Path | str,
        adapter_path: Path | str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_top_k: int = DEFAULT_TOP_K,
        max_batch_tokens: int = 4096,
        max_batch_size: int = 32,
        inst: BackendInstrumentation | None = None,
        seed: int = 0,
        gguf_file: str | None = None,
        model_name: str | None = None,
        max_null_adapters: int = 8,
        call_overhead_tokens: int | None = None,
        **inst_kwargs: Any,
    ) -> None:
        self.max_top_k = _positive_int("max_top_k", max_top_k)
        self.max_batch_tokens = _positive_int("max_batch_tokens", max_batch_tokens)
        self.max_batch_size = _positive_int("max_batch_size", max_batch_size)
        self.max_null_adapters = _positive_int("max_null_adapters", max_null_adapters)
        if inst is not None and inst_kwargs:
            raise ConfigError(
                f"pass either inst= or instrumentation keywords ({sorted(inst_kwargs)}), not both"
            )
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
        if call_overhead_tokens is not None and (
            isinstance(call_overhead_tokens, bool)
            or not isinstance(call_overhead_tokens, int)
            or call_overhead_tokens < 0
        ):
            raise ConfigError(
                f"call_overhead_tokens must be an integer >= 0; got {call_overhead_tokens!r}"
            )
        self.seed = seed
        base_dir, gguf = self._check_base(Path(base_path).expanduser(), gguf_file)
        adapter_dir, adapter_cfg = self._check_adapter(Path(adapter_path).expanduser())
        self.base_path = base_dir
        self.gguf_file = gguf
        self.adapter_path = adapter_dir
        self.adapter_config: dict[str, Any] = adapter_cfg
        self._model_name = model_name or (Path(gguf).stem if gguf else base_dir.name)
        self._adapter_name = adapter_dir.name
        self.adapter_hash = adapter_content_hash(adapter_dir)
        base_ident = str(base_dir.resolve()) + (f"/{gguf}" if gguf else "")
        model_id = f"{base_ident}|{str(self.dtype).removeprefix('torch.')}@{self.adapter_hash[:16]}"

        if inst is not None and inst.model_id is not None and inst.model_id != model_id:
            raise ConfigError(
                f"instrumentation already belongs to model {inst.model_id!r}; give each "
                "backend its own BackendInstrumentation"
            )
        own_inst = inst is None
        if inst is None:
            try:
                inst = BackendInstrumentation(model_name=self._model_name, **inst_kwargs)
            except TypeError as exc:
                raise ConfigError(f"unknown instrumentation keyword: {exc}") from exc
        self.inst = inst
        self.model_id = model_id

        torch.manual_seed(seed)
        try:
            self.tokenizer, self.model = self._load()
        except BaseException:
            if own_inst:
                inst.close()
            raise
        self._fast_encode: Callable[[str], Any] | None = None
        self._choose_tokenizer_path()
        self._slots = self._collect_slots()
        self._scalings = {id(s.layer): dict(s.layer.scaling) for s in self._slots}
        self._layers = list({id(s.layer): s.layer for s in self._slots}.values())
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        cfg = self.model.config
        self.context_length: int | None = getattr(cfg, "max_position_embeddings", None)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        self._pad_id = int(pad) if pad is not None else 0
        self._nulls: OrderedDict[str, _NullAdapter] = OrderedDict()
        self._active: HFView | None = None
        self._state_lock = threading.Lock()
        self._forward_lock = threading.RLock()
        self._closed = False
        self._packed = False
        self._body: Any = None
        self._head: Any = None
        self._choose_forward_path()
        self.call_overhead_tokens: int = (
            self._default_call_overhead() if call_overhead_tokens is None else call_overhead_tokens
        )
        if not inst.model_name:
            inst.model_name = self._model_name
        inst.model_id = model_id  # joins every cache key: two models never share entries

    @classmethod
    def from_gguf(cls, gguf_path: Path | str, adapter_path: Path | str, **kwargs: Any) -> HFBackend:
        """Load the base from a ``.gguf`` file (dequantized by transformers)."""
        path = Path(gguf_path).expanduser()
        return cls(path.parent, adapter_path, gguf_file=path.name, **kwargs)

    # -- loading ------------------------------------------------------------------------

    @staticmethod
    def _check_base(path: Path, gguf_file: str | None) -> tuple[Path, str | None]:
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

    @staticmethod
    def _check_adapter(path: Path) -> tuple[Path, dict[str, Any]]:
        if not path.is_dir():
            raise ModelLoadError(
                f"adapter folder {str(path)!r} does not exist; pass a local PEFT LoRA adapter "
                "folder (adapter_config.json + adapter_model.safetensors)"
            )
        cfg_path = path / "adapter_config.json"
        if not cfg_path.is_file():
            raise ModelLoadError(
                f"adapter folder {str(path)!r} has no adapter_config.json; pass the folder "
                "written by PEFT's save_pretrained"
            )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"adapter config {str(cfg_path)!r} is not valid JSON ({exc}); re-save the adapter"
            ) from exc
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"adapter config {str(cfg_path)!r} is not a JSON object")
        peft_type = cfg.get("peft_type")
        if str(peft_type).upper() != "LORA":
            raise ModelLoadError(
                f"adapter {str(path)!r} has peft_type {peft_type!r}, not 'LORA'; swayscope "
                "compares LoRA adapters only — pass a LoRA adapter folder"
            )
        if cfg.get("use_dora"):
            raise ModelLoadError(
                f"adapter {str(path)!r} is a DoRA adapter (use_dora=true); only plain LoRA "
                "adapters are supported — pass a LoRA adapter without DoRA"
            )
        if not any((path / w).is_file() for w in _ADAPTER_WEIGHTS):
            raise ModelLoadError(
                f"adapter folder {str(path)!r} has no weights ({' or '.join(_ADAPTER_WEIGHTS)}); "
                "pass the complete folder written by PEFT's save_pretrained"
            )
        return path, cfg

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging

        hf_logging: Any = logging  # untyped functions

        gguf_kw: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        progress = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    tokenizer = AutoTokenizer.from_pretrained(
                        str(self.base_path), local_files_only=True, **gguf_kw
                    )
                except Exception as exc:
                    raise ModelLoadError(
                        f"cannot load the tokenizer from {str(self.base_path)!r}: "
                        f"{type(exc).__name__}: {exc}. The base folder needs tokenizer files "
                        "(tokenizer.json or the GGUF's vocabulary)"
                    ) from exc
                try:
                    base = AutoModelForCausalLM.from_pretrained(
                        str(self.base_path), dtype=self.dtype, local_files_only=True, **gguf_kw
                    )
                except Exception as exc:
                    raise ModelLoadError(
                        f"cannot load the base model from {str(self.base_path)!r}: "
                        f"{type(exc).__name__}: {exc}. Pass a causal-LM folder saved with "
                        "transformers (or a .gguf file)"
                    ) from exc
                model = self._attach_adapter(base)
        finally:
            if progress:
                hf_logging.enable_progress_bar()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.to(self.device)
        return tokenizer, model

    def _attach_adapter(self, base: Any) -> Any:
        from peft import LoraConfig, PeftModel
        from peft.tuners.tuners_utils import check_target_module_exists

        try:
            lora_cfg = LoraConfig.from_pretrained(str(self.adapter_path))
        except Exception as exc:
            raise ModelLoadError(
                f"cannot read the LoRA config in {str(self.adapter_path)!r}: "
                f"{type(exc).__name__}: {exc}; re-save the adapter with PEFT"
            ) from exc
        targets = lora_cfg.target_modules
        if targets is not None and targets != "all-linear":
            names = [n for n, _ in base.named_modules() if n]
            if not any(check_target_module_exists(lora_cfg, n) for n in names):
                shown = sorted(targets) if isinstance(targets, (set, list)) else targets
                raise ModelLoadError(
                    f"adapter {str(self.adapter_path)!r} targets modules {shown!r}, which are not "
                    f"in the base model {str(self.base_path)!r}; pass the adapter trained for this "
                    "base model"
                )
        try:
            return PeftModel.from_pretrained(
                base, str(self.adapter_path), adapter_name=ADAPTER, is_trainable=False
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot attach adapter {str(self.adapter_path)!r} to base model "
                f"{str(self.base_path)!r}: {type(exc).__name__}: {exc}. Was it trained for "
                "this base model?"
            ) from exc

    def _collect_slots(self) -> list[_Slot]:
        from peft.tuners.lora import LoraLayer

        slots: list[_Slot] = []
        for name, module in self.model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for family in _RANK_DIM:
                container = getattr(module, family, None)
                if container is None or ADAPTER not in container:
                    continue
                entry = container[ADAPTER]
                param = entry if isinstance(entry, torch.nn.Parameter) else entry.weight
                slots.append(_Slot(name, module, family, param))
        if not slots:
            raise ModelLoadError(
                f"adapter {str(self.adapter_path)!r} attached no LoRA layer to the base model; "
                "pass the adapter trained for this base model"
            )
        stored = self._stored_lora_tensors()
        if stored is not None and stored != len(slots):
            raise ModelLoadError(
                f"adapter {str(self.adapter_path)!r} holds {stored} LoRA tensors but {len(slots)} "
                f"LoRA parameters were attached to base model {str(self.base_path)!r}; some of "
                "its weights match no module (or some modules got no weights) — pass the adapter "
                "trained for this base model"
            )
        return slots

    def _stored_lora_tensors(self) -> int | None:
        """How many LoRA A/B tensors the adapter's safetensors file holds (None: unknown)."""
        path = self.adapter_path / "adapter_model.safetensors"
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
        except Exception as exc:
            raise ModelLoadError(
                f"adapter weights {str(path)!r} are not a readable safetensors file ({exc}); "
                "re-save the adapter"
            ) from exc
        families = tuple(f".{family}." for family in _RANK_DIM)
        return sum(1 for k in keys if any(f in k for f in families))

    # -- identity -----------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def adapter_name(self) -> str:
        return self._adapter_name

    @property
    def lora_rank(self) -> int:
        """Rank of the adapter (of its first LoRA layer)."""
        s = self._slots[0]
        return int(s.param.shape[_RANK_DIM[s.family]])

    def tokenize(self, text: str) -> list[int]:
        """Token ids the model scores for ``text`` (special tokens such as BOS included)."""
        if self._fast_encode is not None:
            fast: list[int] = self._fast_encode(text).ids
            return fast
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    def _choose_tokenizer_path(self) -> None:
        """Call the Rust tokenizer directly when it agrees with transformers (much cheaper)."""
        self._fast_encode = None
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        encode = getattr(backend, "encode", None)
        if encode is None:
            return
        samples = ["Hello, world!", " leading space", "naïve café ✓ 123", "a\nb\tc  d"]
        try:
            agree = all(
                encode(t).ids == self.tokenizer(t, add_special_tokens=True)["input_ids"]
                for t in samples
            )
        except Exception:
            agree = False
        if agree:
            self._fast_encode = encode

    # -- views --------------------------------------------------------------------------

    @contextmanager
    def _enter(self, view_id: str, configure: Callable[[], None]) -> Iterator[HFView]:
        with self._state_lock:
            if self._closed:
                raise ViewError(f"cannot enter view {view_id!r}: the backend is closed")
            if self._active is not None:
                raise ViewError(
                    f"cannot enter view {view_id!r}: view {self._active.id!r} is still active; "
                    "exit it first (one view at a time)"
                )
            view = HFView(self, view_id)
            self._active = view

        def enter() -> None:
            try:
                configure()
            except BaseException:
                self._restore()
                raise

        try:
            with self.inst.view(view_id, enter=enter, exit=self._restore):
                yield view
        finally:
            view._live = False
            with self._state_lock:
                self._active = None

    def _set_enabled(self, enabled: bool) -> None:
        for layer in self._layers:
            # BaseTunerLayer.disable_adapters reads this flag; enable_adapters() would
            # also flip requires_grad, which inference never needs.
            layer._disable_adapters = not enabled

    def _restore(self) -> None:
        """Put the model back to its resting state: the adapter as trained, enabled."""
        for s in self._slots:
            self._put(s, s.param)
        for layer in self._layers:
            layer.scaling.clear()
            layer.scaling.update(self._scalings[id(layer)])
        self._set_enabled(True)

    @staticmethod
    def _put(slot: _Slot, param: torch.nn.Parameter) -> None:
        container = getattr(slot.layer, slot.family)
        if isinstance(container, torch.nn.ParameterDict):
            if container[ADAPTER] is not param:
                container[ADAPTER] = param
        elif container[ADAPTER].weight is not param:
            container[ADAPTER].weight = param

    def _configure_scaled(self, lam: float) -> None:
        self._restore()
        if lam == 0.0:
            self._set_enabled(False)
            return
        if lam == 1.0:
            return
        for layer in self._layers:
            original = self._scalings[id(layer)]
            layer.scaling[ADAPTER] = original[ADAPTER] * lam

    def base(self) -> AbstractContextManager[HFView]:
        """The base model: every LoRA layer switched off."""
        return self._enter("base", lambda: self._configure_scaled(0.0))

    def ft(self) -> AbstractContextManager[HFView]:
        """The fine-tuned model: the adapter as trained."""
        return self._enter("ft", lambda: self._configure_scaled(1.0))

    def scaled(self, lam: float) -> AbstractContextManager[HFView]:
        """The adapter with every LoRA ``scaling`` times λ (λ = 0 is ``base``, λ = 1 is ``ft``)."""
        view_id = scaled_view_id(lam)
        return self._enter(view_id, lambda: self._configure_scaled(float(lam)))

    def null(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> AbstractContextManager[HFView]:
        """A random LoRA in place of the adapter: the noise floor of "any adapter this size".

        For every LoRA parameter of the adapter (each module's ``lora_A`` and
        ``lora_B``) the null adapter has a Gaussian tensor with the same root-mean-
        square as the adapter's tensor, drawn from a ``torch.Generator`` seeded by
        (``seed``, module name, A/B) — identical in every process. ``lora_B`` is
        multiplied by ``init_scale``, so the update ``B·A`` scales linearly with it.
        ``rank_scale`` scales the *rank*: the null has
        ``max(1, round(r * rank_scale))`` rank components per module at the same
        per-entry size and the adapter's own ``scaling`` (so the update's norm grows
        like ``sqrt(rank_scale)``). Built once per id and kept (see
        ``max_null_adapters``).
        """
        view_id = null_view_id(seed, init_scale, rank_scale)

        def configure() -> None:
            null = self._null_adapter(view_id, seed, float(init_scale), float(rank_scale))
            self._restore()
            for slot, param in zip(self._slots, null.params, strict=True):
                self._put(slot, param)

        return self._enter(view_id, configure)

    def _null_adapter(
        self, view_id: str, seed: int, init_scale: float, rank_scale: float
    ) -> _NullAdapter:
        null = self._nulls.get(view_id)
        if null is not None:
            self._nulls.move_to_end(view_id)
            return null
        params: list[torch.nn.Parameter] = []
        with torch.no_grad():
            for s in self._slots:
                dim = _RANK_DIM[s.family]
                shape = list(s.param.shape)
                shape[dim] = max(1, round(shape[dim] * rank_scale))
                real = s.param.detach().to(device="cpu", dtype=torch.float32)
                rms = float(real.pow(2).mean().sqrt()) if real.numel() else 0.0
                scale = rms * (init_scale if s.family in ("lora_B", "lora_embedding_B") else 1.0)
                gen = torch.Generator(device="cpu").manual_seed(
                    _derived_seed("swayscope-null", seed, s.module_name, s.family)
                )
                noise = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
                tensor = noise.to(device=s.param.device, dtype=s.param.dtype)
                params.append(torch.nn.Parameter(tensor, requires_grad=False))
        null = _NullAdapter(view_id=view_id, params=params)
        self._nulls[view_id] = null
        while len(self._nulls) > self.max_null_adapters:
            self._nulls.popitem(last=False)
        return null

    def null_tensors(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """The null adapter's tensors by ``module.family`` name (for inspection and tests)."""
        view_id = null_view_id(seed, init_scale, rank_scale)
        null = self._null_adapter(view_id, seed, float(init_scale), float(rank_scale))
        return {
            f"{s.module_name}.{s.family}": p.detach()
            for s, p in zip(self._slots, null.params, strict=True)
        }

    # -- inputs -------------------------------------------------------------------------

    def _check_top_k(self, top_k: int) -> None:
        check_top_k(top_k)
        if top_k > self.max_top_k and self.max_top_k < self.vocab_size:
            raise InputError(
                f"top_k={top_k} is above this backend's max_top_k={self.max_top_k}; ask for "
                f"top_k <= {self.max_top_k} or build HFBackend(max_top_k={top_k})"
            )

    def _checked_ids(self, text: str) -> list[int]:
        ids = self.tokenize(text)
        if not ids:
            raise InputError(f"text {_short(text)} tokenizes to no tokens; give more text")
        if self.context_length is not None and len(ids) > self.context_length:
            raise InputError(
                f"text {_short(text)} has {len(ids)} tokens, more than the model's context of "
                f"{self.context_length}; shorten it"
            )
        return ids

    def _completion_start(self, prompt: str, completion: str) -> int:
        """Index of the first token of ``prompt + completion`` that the completion affects."""
        check_text(prompt)
        check_text(completion, "completion")
        p = self.tokenize(prompt)
        full = self.tokenize(prompt + completion)
        k = 0
        for a, b in zip(p, full, strict=False):
            if a != b:
                break
            k += 1
        if len(full) <= k:
            raise InputError(
                f"completion {_short(completion)} adds no token after prompt {_short(prompt)}; "
                "give a completion that tokenizes to at least one token"
            )
        if k == 0:
            raise InputError(
                f"completion {_short(completion)} merges into the first token of prompt "
                f"{_short(prompt)}, so nothing before it can be scored; give a longer prompt"
            )
        return k

    def _planner(self, texts: Sequence[str], ids: dict[int, list[int]]) -> BatchPlanner:
        """Plan forward calls for the missed texts (see :func:`plan_batches`)."""

        def plan(misses: list[int]) -> list[list[int]]:
            for i in misses:
                if i not in ids:
                    ids[i] = self._checked_ids(texts[i])
            return plan_batches(
                {i: len(ids[i]) for i in misses},
                max_batch_size=self.max_batch_size,
                max_batch_tokens=self.max_batch_tokens,
                call_overhead_tokens=self.call_overhead_tokens,
            )

        return plan

    # -- forward ------------------------------------------------------------------------

    def _compute(self, batch: list[list[int]]) -> list[ForwardRecord]:
        """One forward call over ``batch`` (split in halves on out-of-memory)."""
        if self._closed:
            raise BackendError("the backend is closed; build a new HFBackend")
        with self._forward_lock, torch.inference_mode():
            return self._forward_split(batch)

    def _forward_split(self, batch: list[list[int]]) -> list[ForwardRecord]:
        try:
            return self._forward(batch)
        except Exception as exc:
            if not _is_oom(exc):
                if isinstance(exc, (BackendError, InputError)):
                    raise
                raise BackendError(
                    f"forward pass failed on {len(batch)} text(s) of up to "
                    f"{max(map(len, batch))} tokens: {type(exc).__name__}: {exc}"
                ) from exc
            if len(batch) <= 1:
                raise BackendError(
                    f"out of device memory on a single text of {len(batch[0])} tokens; "
                    "shorten it, use a smaller dtype or run on a larger device"
                ) from exc
        # Out of memory: release what the failed call held, then retry in halves.
        self.inst.stats.oom_splits += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        mid = len(batch) // 2
        return self._forward_split(batch[:mid]) + self._forward_split(batch[mid:])

    def _model_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``[T, V]`` of the real (unpadded) positions, row after row.

        The packed path runs the decoder body on the padded batch and the output
        head only on real tokens (the head is the widest matmul and padding is
        waste there); the full path asks the whole model for ``[B, L, V]`` logits.
        """
        real = attention_mask.bool()
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": False,
        }
        if self._packed:
            out = self._body(**kwargs)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            packed: torch.Tensor = self._head(hidden[real])
            return packed
        logits: torch.Tensor = self.model(**kwargs).logits
        return logits[real]

    def _packed_head_parts(self) -> tuple[Any, Any] | None:
        """The decoder body and output head, when the model is the usual ``*ForCausalLM``."""
        base = self.model.get_base_model()
        body = getattr(base, getattr(base, "base_model_prefix", ""), None)
        head = base.get_output_embeddings()
        if not isinstance(body, torch.nn.Module) or not isinstance(head, torch.nn.Module):
            return None
        return body, head

    def _default_call_overhead(self) -> int:
        """What one more forward call costs, in padded tokens, guessed from the model's shape.

        A call's fixed cost (Python, kernel launches) grows with the number of
        layers and a token's cost with the parameter count, so small models gain
        most from merging calls: the tiny 2-layer model comes out at ~250 tokens.
        Larger models get the floor (64 on CPU, where matmuls over more rows also
        run more efficiently; 1024 on CUDA, where a token costs far less than a
        call); never more than ``max_batch_tokens``.
        """
        layers = int(getattr(self.model.config, "num_hidden_layers", None) or 12)
        params_m: float = sum(p.numel() for p in self.model.parameters()) / 1e6
        cuda = self.device.type == "cuda"
        guess = round((80_000.0 if cuda else 40.0) * layers / max(params_m, 1e-3))
        floor = 1024 if cuda else 64
        return min(self.max_batch_tokens, max(floor, guess))

    def _choose_forward_path(self) -> None:
        """Use the packed head only where it reproduces the model's own logits (self-check)."""
        parts = self._packed_head_parts()
        self._packed = False
        if parts is None:
            return
        self._body, self._head = parts
        probe = torch.tensor([[self._pad_id, 1, 2, 3], [4, 5, 6, 7]], dtype=torch.long)
        probe = probe.clamp(max=self.vocab_size - 1).to(self.device)
        mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.long, device=self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        tol = 1e-4 if self.dtype == torch.float32 else 2e-2
        try:
            with self._forward_lock, torch.inference_mode():
                full = self._model_forward(probe, mask, pos).float()
                self._packed = True
                packed = self._model_forward(probe, mask, pos).float()
            self._packed = bool(torch.allclose(full, packed, atol=tol, rtol=tol))
        except Exception:
            self._packed = False

    def _forward(self, batch: list[list[int]]) -> list[ForwardRecord]:
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # left padding: every text ends at the last column
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        # [T, V]: the real positions of row 0, then row 1, ...
        scores = self._model_forward(
            input_ids.to(self.device), mask.to(self.device), position_ids.to(self.device)
        ).float()
        vocab = int(scores.shape[-1])
        k = min(self.max_top_k, vocab)
        ends = np.cumsum([len(ids) for ids in batch])
        starts = ends - np.asarray([len(ids) for ids in batch])
        pred = np.concatenate([np.arange(s, e - 1) for s, e in zip(starts, ends, strict=True)])
        targets = [t for ids in batch for t in ids[1:]]
        dev = scores.device
        logz = torch.logsumexp(scores, dim=-1)
        pred_t = torch.as_tensor(pred, dtype=torch.long, device=dev)
        tgt_t = torch.tensor(targets, dtype=torch.long, device=dev)
        token_lp = scores[pred_t, tgt_t] - logz[pred_t]
        last_t = torch.as_tensor(ends - 1, dtype=torch.long, device=dev)
        last = scores[last_t] - logz[last_t, None]  # [B, V]
        top = torch.topk(last, k, dim=-1, sorted=True)
        tail = torch.logsumexp(last.scatter(-1, top.indices, -math.inf), dim=-1)
        token_np = token_lp.double().cpu().numpy()
        top_np = top.values.double().cpu().numpy()
        ids_np = top.indices.cpu().numpy().astype(np.int64)
        tail_np = tail.double().cpu().numpy()
        records: list[ForwardRecord] = []
        offset = 0
        for row, ids in enumerate(batch):
            n = len(ids)
            dist = TokenDist(
                token_ids=ids_np[row].copy(),
                logprobs=top_np[row].copy(),
                vocab_size=vocab,
                tail_logprob=float(tail_np[row]),
                n_tokens=n,
            )
            rolling = RollingLogprob(
                token_ids=np.asarray(ids, dtype=np.int64),
                logprobs=token_np[offset : offset + n - 1].copy(),
                n_tokens=n,
            )
            offset += n - 1
            records.append(ForwardRecord(dist=dist, rolling=rolling))
        return records

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush and shut down the instrumentation's exporters; the backend is unusable after."""
        if self._closed:
            return
        self._closed = True
        self._nulls.clear()
        self.inst.close()

    def __enter__(self) -> HFBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ADAPTER",
    "FORWARD_OP",
    "ForwardRecord",
    "HFBackend",
    "HFView",
    "adapter_content_hash",
    "plan_batches",
]
