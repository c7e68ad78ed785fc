"""HFBackend: the base model and its LoRA adapter loaded once, seen through views.

It composes the package's parts: :mod:`.loading` checks and loads, :class:`.LoraSwitch`
sets the LoRA layers per view, :class:`.NullAdapters` builds null adapters,
:class:`.TextEncoder` tokenizes, :class:`.ForwardPass` runs the model, and
:class:`.RecordSource` is what its :class:`.HFView` views score through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swayscope.backends.api import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BATCH_TOKENS,
    DEFAULT_MAX_NULL_ADAPTERS,
    DEFAULT_PREFIX_CACHE_BYTES,
    DEFAULT_TOP_K,
)
from swayscope.backends.hf.forward import ForwardPass
from swayscope.backends.hf.generate import GenerationSource, Generator
from swayscope.backends.hf.loading import (
    adapter_content_hash,
    base_identity,
    check_adapter,
    check_attached,
    check_base,
    fingerprint_models,
    load_model,
    model_identity,
    positive_int,
    replace_adapter,
    resolve_device,
    resolve_dtype,
)
from swayscope.backends.hf.lora import LoraSlot, LoraSwitch, collect_slots
from swayscope.backends.hf.null_adapters import NullAdapters
from swayscope.backends.hf.planner import BatchLimits, guess_call_overhead
from swayscope.backends.hf.records import RecordSource
from swayscope.backends.hf.tokenizer import TextEncoder
from swayscope.backends.hf.view_state import ViewState
from swayscope.backends.hf.views import ViewOpeners, ViewSlot
from swayscope.backends.threads import apply_threads
from swayscope.errors import ConfigError
from swayscope.instrumentation import BackendInstrumentation


class HFBackend(ViewOpeners):
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
        adapter_name: what runs report as the adapter; defaults to the adapter folder's
            name.
        max_null_adapters: null adapters kept in memory (least recently used
            beyond this are dropped and rebuilt identically when asked for again).
        call_overhead_tokens: what one extra forward call costs, in padded tokens,
            when the batcher weighs padding against more calls; by default guessed
            from the model's layers and parameters and the device
            (:func:`~swayscope.backends.hf.planner.guess_call_overhead`); 0 minimises
            padding. Shared prefixes are computed once when that saves more tokens
            than this.
        prefix_cache_max_bytes: byte budget of the shared-prefix store (keys and values
            of prefixes kept between calls, per view, least recently used out first);
            0 turns shared-prefix reuse off.
        threads: CPU threads torch computes with (``torch.set_num_threads``), at most the
            CPUs this process may use; default: all of them
            (:func:`~swayscope.backends.threads.choose_threads`).

    Public parts: ``encoder`` (:class:`.TextEncoder`), ``lora`` (:class:`.LoraSwitch`),
    ``forward_pass`` (:class:`.ForwardPass`), ``generator`` (:class:`.Generator`),
    ``limits`` (:class:`.BatchLimits`).

    :meth:`swap_adapter` puts another adapter of the same base in place of this one
    (a checkpoint sweep): the base view's cache entries are keyed by the base model only
    (``base_id``), so every adapter shares them; the other views' keys name the adapter.
    """

    def __init__(
        self,
        base_path: Path | str,
        adapter_path: Path | str,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_top_k: int = DEFAULT_TOP_K,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        inst: BackendInstrumentation | None = None,
        seed: int = 0,
        gguf_file: str | None = None,
        model_name: str | None = None,
        adapter_name: str | None = None,
        max_null_adapters: int = DEFAULT_MAX_NULL_ADAPTERS,
        call_overhead_tokens: int | None = None,
        prefix_cache_max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        threads: int | None = None,
        **inst_kwargs: Any,
    ) -> None:
        max_top_k = positive_int("max_top_k", max_top_k)
        max_batch_tokens = positive_int("max_batch_tokens", max_batch_tokens)
        max_batch_size = positive_int("max_batch_size", max_batch_size)
        max_null_adapters = positive_int("max_null_adapters", max_null_adapters)
        if isinstance(prefix_cache_max_bytes, bool) or not isinstance(
            prefix_cache_max_bytes, int
        ) or prefix_cache_max_bytes < 0:
            raise ConfigError(
                "prefix_cache_max_bytes must be an integer >= 0 (0: no shared-prefix reuse); "
                f"got {prefix_cache_max_bytes!r}"
            )
        choice = apply_threads(threads)
        self.threads = choice.count
        self.threads_reason = choice.why
        if inst is not None and inst_kwargs:
            raise ConfigError(
                f"pass either inst= or instrumentation keywords ({sorted(inst_kwargs)}), not both"
            )
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        _check_call_overhead(call_overhead_tokens)
        self.seed = seed
        self.base_path, self.gguf_file = check_base(Path(base_path).expanduser(), gguf_file)
        self.adapter_path, self.adapter_config = check_adapter(Path(adapter_path).expanduser())
        self._model_name = model_name or (
            Path(self.gguf_file).stem if self.gguf_file else self.base_path.name
        )
        self._adapter_name = adapter_name or self.adapter_path.name
        self.adapter_hash = adapter_content_hash(self.adapter_path)
        self.base_id = base_identity(self.base_path, self.gguf_file, self.dtype)
        self.model_id = model_identity(
            self.base_path, self.gguf_file, self.dtype, self.adapter_hash
        )
        self.inst, own_inst = _instrumentation(inst, inst_kwargs, self._model_name, self.model_id)
        self._fingerprint()
        torch.manual_seed(seed)
        slots = self._load(own_inst)
        self._assemble(
            slots, max_top_k, max_batch_size, max_batch_tokens, call_overhead_tokens,
            prefix_cache_max_bytes,
        )
        self._nulls = NullAdapters(slots, max_null_adapters)
        self._closed = False
        if not self.inst.model_name:
            self.inst.model_name = self._model_name
        self.inst.model_id = self.model_id  # joins every cache key: two models never share entries

    def _fingerprint(self) -> None:
        fingerprint_models(
            self.inst, self.base_id, self.model_id, self.base_path, self.gguf_file, self.dtype,
            self.device, self.adapter_hash,
        )

    def _load(self, own_inst: bool) -> list[LoraSlot]:
        """Load the tokenizer and the model, and find the adapter's LoRA parameters in it.

        On failure an instrumentation the backend built itself is closed (nobody
        else holds it).
        """
        try:
            self.tokenizer, self.model = load_model(
                self.base_path,
                self.gguf_file,
                self.adapter_path,
                dtype=self.dtype,
                device=self.device,
            )
            slots = collect_slots(self.model)
            check_attached(slots, self.adapter_path, self.base_path)
        except BaseException:
            if own_inst:
                self.inst.close()
            raise
        return slots

    def _assemble(
        self,
        slots: list[LoraSlot],
        max_top_k: int,
        max_batch_size: int,
        max_batch_tokens: int,
        call_overhead_tokens: int | None,
        prefix_cache_max_bytes: int,
    ) -> None:
        """Build the parts that work on the loaded model."""
        self.encoder = TextEncoder(
            self.tokenizer,
            getattr(self.model.config, "max_position_embeddings", None),
            lambda text: f"(prompt hash {self.inst.hash_prompt(text)}, {len(text)} characters)",
        )
        self.lora = LoraSwitch(slots)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        if call_overhead_tokens is None:
            call_overhead_tokens = guess_call_overhead(self.model, self.device, max_batch_tokens)
        self.limits = BatchLimits(max_batch_size, max_batch_tokens, call_overhead_tokens)
        self.forward_pass = ForwardPass(
            self.model,
            self.inst,
            device=self.device,
            dtype=self.dtype,
            pad_id=self.encoder.pad_id,
            vocab_size=self.vocab_size,
            max_top_k=max_top_k,
            limits=self.limits,
            prefix_cache_max_bytes=prefix_cache_max_bytes,
        )
        source = RecordSource(
            self.inst, self.encoder, self.forward_pass, self.limits, key_model=self._key_model
        )
        self.generator = Generator(self.forward_pass, self.encoder)
        generations = GenerationSource(
            self.inst, self.encoder, self.generator, self.limits, key_model=self._key_model
        )
        # Looked up at each call: swap_adapter replaces the switch.
        self._views = ViewSlot(
            self.inst, source, generations, restore=lambda: self.lora.restore()
        )

    def _key_model(self, view_id: str) -> str | None:
        """The base view does not depend on the adapter: its entries name the base only."""
        return self.base_id if view_id == "base" else None

    @classmethod
    def from_gguf(cls, gguf_path: Path | str, adapter_path: Path | str, **kwargs: Any) -> HFBackend:
        """Load the base from a ``.gguf`` file (dequantized by transformers)."""
        path = Path(gguf_path).expanduser()
        return cls(path.parent, adapter_path, gguf_file=path.name, **kwargs)

    # -- identity and settings ------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def adapter_name(self) -> str:
        return self._adapter_name

    @property
    def lora_rank(self) -> int:
        """Rank of the adapter (of its first LoRA layer)."""
        return self.lora.rank

    @property
    def context_length(self) -> int | None:
        """The model's context in tokens (``max_position_embeddings``; None: unknown)."""
        return self.encoder.context_length

    @property
    def max_top_k(self) -> int:
        return self.forward_pass.max_top_k

    @property
    def max_null_adapters(self) -> int:
        return self._nulls.max_kept

    @property
    def max_batch_size(self) -> int:
        return self.limits.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        self.limits.max_batch_size = positive_int("max_batch_size", value)

    @property
    def max_batch_tokens(self) -> int:
        return self.limits.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, value: int) -> None:
        self.limits.max_batch_tokens = positive_int("max_batch_tokens", value)

    @property
    def call_overhead_tokens(self) -> int:
        return self.limits.call_overhead_tokens

    @call_overhead_tokens.setter
    def call_overhead_tokens(self, value: int) -> None:
        _check_call_overhead(value)
        self.limits.call_overhead_tokens = value

    def tokenize(self, text: str) -> list[int]:
        """Token ids the model scores for ``text`` (special tokens such as BOS included)."""
        return self.encoder.tokenize(text)

    def token_prefix(self, text: str, n_tokens: int) -> str:
        """The start of ``text`` its first ``n_tokens`` tokens cover (see
        :meth:`.TextEncoder.token_prefix`)."""
        return self.encoder.token_prefix(text, n_tokens)

    # -- views ----------------------------------------------------------------------------

    def _set_view(self, state: ViewState) -> None:
        state.apply(self.lora, self._nulls)

    def set_view_state(self, state: ViewState) -> None:
        """Set the LoRA layers to ``state`` outside any view: for a process that computes
        forward calls of views opened elsewhere (a pool worker, whose driver holds the
        views and sends each call's state with it). Refused while a view is active."""
        self._views.check_idle(f"set the view state to {state!r}")
        self._set_view(state)

    def null_tensors(
        self, seed: int, *, init_scale: float = 1.0, rank_scale: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """The null adapter's tensors by ``module.family`` name (for inspection and tests)."""
        return self._nulls.tensors(seed, init_scale, rank_scale)

    # -- the adapter swap (checkpoint sweeps) ---------------------------------------------

    def swap_adapter(self, adapter_path: Path | str, *, name: str | None = None) -> None:
        """Put the LoRA adapter in ``adapter_path`` in place of this one, on the same base
        model (peft's ``delete_adapter``/``load_adapter``; the base is not loaded again).

        ``name`` is what runs then report as the adapter (default: the folder's name).
        Cached base-view entries stay valid and shared; the other views are keyed by the
        new adapter's content from now on, null adapters are rebuilt for its shape and
        size, and stored shared prefixes are dropped. Not while a view is active. When
        the adapter cannot be loaded, :class:`~swayscope.errors.AdapterLoadError` says why
        and the previous adapter is still in place.
        """
        path, config = check_adapter(Path(adapter_path).expanduser())
        self._views.check_idle("swap the adapter")
        try:
            replace_adapter(self.model, path, self.adapter_path, self.base_path, self.device)
        finally:
            # New parameter objects either way (after a failure, the previous adapter's,
            # attached again): the switch and the null adapters follow them, and stored
            # prefixes go (their keys and values were computed with the old weights).
            slots = collect_slots(self.model)
            self.lora = LoraSwitch(slots)
            self._nulls = NullAdapters(slots, self._nulls.max_kept)
            self.forward_pass.store.clear()
        self.adapter_path, self.adapter_config = path, config
        self._adapter_name = name or path.name
        self.adapter_hash = adapter_content_hash(path)
        self.model_id = model_identity(
            self.base_path, self.gguf_file, self.dtype, self.adapter_hash
        )
        self.inst.model_id = self.model_id
        self._fingerprint()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and shut down the instrumentation's exporters; the backend is unusable after."""
        if self._closed:
            return
        self._closed = True
        self._views.close()
        self.forward_pass.close()
        self._nulls.clear()
        self.inst.close()

    def __enter__(self) -> HFBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_call_overhead(value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(f"call_overhead_tokens must be an integer >= 0; got {value!r}")


def _instrumentation(
    inst: BackendInstrumentation | None,
    inst_kwargs: dict[str, Any],
    model_name: str,
    model_id: str,
) -> tuple[BackendInstrumentation, bool]:
    """The instrumentation to use and whether the backend built it (and so owns it)."""
    if inst is not None:
        if inst.model_id is not None and inst.model_id != model_id:
            raise ConfigError(
                f"instrumentation already belongs to model {inst.model_id!r}; give each "
                "backend its own BackendInstrumentation"
            )
        return inst, False
    try:
        return BackendInstrumentation(model_name=model_name, **inst_kwargs), True
    except TypeError as exc:
        raise ConfigError(f"unknown instrumentation keyword: {exc}") from exc


__all__ = ["HFBackend"]
