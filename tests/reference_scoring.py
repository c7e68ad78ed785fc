"""An independent, plain computation of what swayscope's scoring ops answer, and the checks
that hold swayscope's answers to it (a uniquely named module; tests/ is on sys.path).

Per text: its token ids from the tokenizer, one unpadded forward pass of the model (no
cache, no shared prefix, no batch), ``torch.log_softmax`` over the whole vocabulary. The
models come from transformers and PEFT directly, never through swayscope:

- ``base``: the base folder as transformers loads it;
- ``ft``: ``PeftModel.from_pretrained`` on the adapter folder;
- ``scaled(λ)``: the same adapter loaded with ``lora_alpha`` times λ in its config (PEFT
  scales each LoRA update by ``lora_alpha / r``);
- ``null(seed, init_scale, rank_scale)``: the null adapter built here from its definition
  (``swayscope.backends.hf.null_adapters``: per LoRA tensor of the adapter, a Gaussian of
  the tensor's root-mean-square, ``lora_B`` times ``init_scale``, the rank times
  ``rank_scale``, the adapter's own ``lora_alpha / r``, each drawn from a CPU
  ``torch.Generator`` seeded by the first 8 bytes of SHA-256 of ``swayscope-null``, the
  seed, the module name and the family) and put into a fresh PEFT model with
  ``set_peft_model_state_dict``.

Only the torch-free parts of swayscope are used here: the result types of ``backends.api``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from swayscope.backends.api import RollingLogprob, ScoringView, TokenDist

#: How far swayscope's answers may be from the plain computation (float32).
TOL = 1e-5

FloatArray = npt.NDArray[np.float64]


def base_model(base_dir: Path, dtype: str = "float32") -> Any:
    """The base model as transformers loads it, in ``dtype``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype).eval()


def adapter_model(
    base_dir: Path, adapter_dir: Path, dtype: str = "float32", scale: float = 1.0
) -> Any:
    """PEFT's own model of the adapter, its ``lora_alpha`` (and any per-module alpha) times
    ``scale`` in the config it is loaded with."""
    from peft import LoraConfig, PeftModel

    config = LoraConfig.from_pretrained(str(adapter_dir))
    config.lora_alpha = config.lora_alpha * scale
    config.alpha_pattern = {k: v * scale for k, v in config.alpha_pattern.items()}
    base = base_model(base_dir, dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir), config=config).eval()


def null_seed(seed: int, module: str, family: str) -> int:
    """The generator seed of one null tensor, as the null adapters' definition says."""
    text = "\x1f".join(map(str, ("swayscope-null", seed, module, family)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def null_state(
    adapter_dir: Path, seed: int, init_scale: float, rank_scale: float
) -> tuple[dict[str, Any], int]:
    """The null adapter's PEFT state dict and its rank, built from the adapter's file."""
    import torch
    from safetensors.torch import load_file

    trained = load_file(str(adapter_dir / "adapter_model.safetensors"))
    ranks: set[int] = set()
    state: dict[str, Any] = {}
    for key, tensor in trained.items():
        module, family, _ = key.rsplit(".", 2)  # "<module>", "lora_A" | "lora_B", "weight"
        rank_dim = {"lora_A": 0, "lora_B": 1}[family]
        shape = list(tensor.shape)
        ranks.add(shape[rank_dim])
        shape[rank_dim] = max(1, round(shape[rank_dim] * rank_scale))
        rms = float(tensor.to(torch.float32).pow(2).mean().sqrt())
        std = rms * (init_scale if family == "lora_B" else 1.0)
        gen = torch.Generator(device="cpu").manual_seed(null_seed(seed, module, family))
        state[key] = torch.randn(shape, generator=gen, dtype=torch.float32) * std
    assert len(ranks) == 1, f"one rank across the adapter's tensors expected; got {ranks}"
    return state, ranks.pop()


def null_model(
    base_dir: Path,
    adapter_dir: Path,
    dtype: str,
    seed: int,
    init_scale: float = 1.0,
    rank_scale: float = 1.0,
) -> Any:
    """A fresh PEFT model of the adapter's targets holding the null adapter's tensors."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = LoraConfig.from_pretrained(str(adapter_dir))
    assert not (config.rank_pattern or config.alpha_pattern or config.use_rslora), (
        "the null definition reproduced here is for one rank and alpha without rsLoRA"
    )
    state, rank = null_state(adapter_dir, seed, init_scale, rank_scale)
    null_rank = max(1, round(rank * rank_scale))
    config.lora_alpha = config.lora_alpha * null_rank / rank  # the adapter's own alpha / r
    config.r = null_rank
    config.inference_mode = True
    base = base_model(base_dir, dtype)
    config.base_model_name_or_path = base.name_or_path
    model = get_peft_model(base, config)
    loaded = set_peft_model_state_dict(model, state)
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    assert not [k for k in loaded.missing_keys if "lora_" in k], loaded.missing_keys
    return model.eval()


def logsumexp(values: FloatArray) -> float:
    if values.size == 0:
        return -math.inf
    top = float(values.max())
    return top + math.log(float(np.exp(values - top).sum()))


@dataclass
class Plain:
    """One model's plain scores: one unpadded forward per text, full log-softmax."""

    model: Any
    tokenizer: Any
    _scores: dict[str, tuple[list[int], FloatArray]] = field(default_factory=dict)

    def ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text)["input_ids"]
        return ids

    def scores(self, text: str) -> tuple[list[int], FloatArray]:
        """``text``'s ids and the log-probability of every vocabulary entry after each."""
        if text not in self._scores:
            import torch

            ids = self.ids(text)
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
            logprobs = torch.log_softmax(logits, dim=-1)
            self._scores[text] = (ids, logprobs.to(torch.float64).numpy())
        return self._scores[text]

    def next_token(self, text: str) -> FloatArray:
        return self.scores(text)[1][-1]

    def rolling(self, text: str) -> FloatArray:
        """Log-probability of each token after the first, given the ones before it."""
        ids, lp = self.scores(text)
        return np.array([lp[j - 1, ids[j]] for j in range(1, len(ids))], dtype=np.float64)

    def logprob_of(self, prompt: str, completion: str) -> float:
        """Sum of the log-probabilities of the tokens of ``prompt + completion`` from the
        first one that differs from the prompt's own tokens (a completion may merge into the
        prompt's last token: that token is then the completion's)."""
        ids, lp = self.scores(prompt + completion)
        prompt_ids = self.ids(prompt)
        start = 0
        while start < min(len(ids), len(prompt_ids)) and ids[start] == prompt_ids[start]:
            start += 1
        assert 0 < start < len(ids), "the pair must score at least one completion token"
        return float(sum(lp[j - 1, ids[j]] for j in range(start, len(ids))))


def check_dist(
    got: TokenDist, plain: Plain, text: str, top_k: int, where: str, tol: float = TOL
) -> None:
    """Every field of ``got`` against the plain computation: the top ids and their
    log-probabilities, the mass outside them, the vocabulary size and the token count."""
    ids, lp = plain.scores(text)
    want = lp[-1]
    k = min(top_k, want.size)
    assert got.vocab_size == want.size, where
    assert got.n_tokens == len(ids), where
    assert got.top_k == k, where
    assert got.token_ids.dtype == np.int64 and got.token_ids.shape == (k,), where
    assert got.logprobs.shape == (k,), where
    assert len(set(got.token_ids.tolist())) == k, f"{where}: repeated token ids"
    assert np.all(np.diff(got.logprobs) <= 0), f"{where}: not sorted by probability"
    # Each id has its own log-probability, and they are the k largest (ties within tol).
    np.testing.assert_allclose(got.logprobs, want[got.token_ids], atol=tol, rtol=0, err_msg=where)
    top = np.sort(want)[::-1][:k]
    np.testing.assert_allclose(got.logprobs, top, atol=tol, rtol=0, err_msg=where)
    tail = logsumexp(np.delete(want, got.token_ids))
    if math.isinf(tail):
        assert got.tail_logprob == -math.inf, where
    else:
        assert abs(got.tail_logprob - tail) <= tol, f"{where}: tail {got.tail_logprob} != {tail}"


def check_rolling(
    got: RollingLogprob, plain: Plain, text: str, where: str, tol: float = TOL
) -> None:
    ids = plain.ids(text)
    assert got.n_tokens == len(ids), where
    np.testing.assert_array_equal(got.token_ids, np.asarray(ids, dtype=np.int64), err_msg=where)
    assert got.logprobs.shape == (len(ids) - 1,), where
    np.testing.assert_allclose(
        got.logprobs, plain.rolling(text), atol=tol, rtol=0, err_msg=where
    )


def check_logprob_of(
    got: float, plain: Plain, prompt: str, completion: str, where: str, tol: float = TOL
) -> None:
    want = plain.logprob_of(prompt, completion)
    assert abs(got - want) <= tol, f"{where}: {got} != {want}"


#: Longer than 48 characters: texts that share it differ only after it.
SHARED = "The keeper climbed the stairs of the lighthouse at dusk and"
TEXTS = [
    SHARED + " lit the lamp.",
    SHARED + " wrote in the log: wind from the north, rising; two ships passed.",
    SHARED + " slept",
    "Fog",
    "Numbers are useful for counting the ships that pass in the night.",
    SHARED + " lit the lamp. Then the fog came in over the rocks.",
    "A",
]


#: The top-k sizes every next-token check asks for (256 needs ``max_top_k >= 256``).
TOP_KS = (1, 16, 256)


#: Builds a view's plain model from (base folder, adapter folder, dtype name).
Reference = Callable[[Path, Path, str], Any]


@dataclass(frozen=True)
class ViewCase:
    """A view of the backend and how to build its plain model."""

    name: str
    open: Callable[[Any], AbstractContextManager[ScoringView]]
    view_id: str
    reference: Reference


def view_cases() -> list[ViewCase]:
    """Every view kind: base, ft, scaled (λ = 0 and 1 alias base and ft), null."""

    def base(m: Path, a: Path, dtype: str) -> Any:
        return base_model(m, dtype)

    def scaled(lam: float) -> Reference:
        return lambda m, a, dtype: adapter_model(m, a, dtype, lam)

    def null(seed: int, init_scale: float = 1.0, rank_scale: float = 1.0) -> Reference:
        return lambda m, a, dtype: null_model(m, a, dtype, seed, init_scale, rank_scale)

    return [
        ViewCase("base", lambda b: b.base(), "base", base),
        ViewCase("ft", lambda b: b.ft(), "ft", scaled(1.0)),
        ViewCase("scaled_0", lambda b: b.scaled(0.0), "base", base),
        ViewCase("scaled_1", lambda b: b.scaled(1.0), "ft", scaled(1.0)),
        ViewCase("scaled_0.5", lambda b: b.scaled(0.5), "scaled_0.5", scaled(0.5)),
        ViewCase("scaled_1.5", lambda b: b.scaled(1.5), "scaled_1.5", scaled(1.5)),
        ViewCase("null_3", lambda b: b.null(3), "null_3_i1.0_r1.0", null(3)),
        ViewCase(
            "null_5_i0.5_r2",
            lambda b: b.null(5, init_scale=0.5, rank_scale=2.0),
            "null_5_i0.5_r2.0",
            null(5, 0.5, 2.0),
        ),
    ]


class References:
    """Plain models by view case, each built on first use (a module of tests shares them)."""

    def __init__(self, base_dir: Path, adapter_dir: Path, dtype: str = "float32") -> None:
        from transformers import AutoTokenizer

        self.base_dir, self.adapter_dir, self.dtype = base_dir, adapter_dir, dtype
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        self._plain: dict[str, Plain] = {}

    def plain(self, case: ViewCase) -> Plain:
        if case.name not in self._plain:
            model = case.reference(self.base_dir, self.adapter_dir, self.dtype)
            self._plain[case.name] = Plain(model, self.tokenizer)
        return self._plain[case.name]


def pairs_of(texts: Sequence[str]) -> list[tuple[str, str]]:
    """(prompt, completion) pairs cut from ``texts``: before the last space, and (for texts
    of more than 12 characters) also inside the last word, so the completion may merge into
    the prompt's last token."""
    out = []
    for text in texts:
        cut = text.rfind(" ")
        if cut > 0:
            out.append((text[:cut], text[cut:]))
        if len(text) > 12:
            out.append((text[:-3], text[-3:]))
    return out


def every_op(
    view: ScoringView,
    plain: Plain,
    clear: Callable[[], None],
    where: str,
    *,
    batched: bool,
    halves: bool = False,
    texts: Sequence[str] = TEXTS,
    tol: float = TOL,
) -> None:
    """Each op over ``texts`` (and their pairs), on an empty cache (``clear``), checked
    against ``plain``: one text at a time, or ``batched`` (with ``halves``: the first half
    of the texts first, then all of them, so the second call computes the rest after the
    first one stored its shared prefixes)."""
    pairs = pairs_of(texts)
    half = len(texts) // 2
    for k in TOP_KS:
        clear()
        if not batched:
            dists = [view.next_token_dist(t, top_k=k) for t in texts]
        else:
            if halves:
                view.next_token_dist_batch(texts[:half], top_k=k)
            dists = view.next_token_dist_batch(texts, top_k=k)
        for text, dist in zip(texts, dists, strict=True):
            check_dist(dist, plain, text, k, f"{where} next_token_dist top_k={k} {text!r}", tol)
    clear()
    if not batched:
        rolls = [view.rolling_logprob(t) for t in texts]
    else:
        if halves:
            view.rolling_logprob_batch(texts[:half])
        rolls = view.rolling_logprob_batch(texts)
    for text, roll in zip(texts, rolls, strict=True):
        check_rolling(roll, plain, text, f"{where} rolling_logprob {text!r}", tol)
    clear()
    if not batched:
        sums = [view.logprob_of(p, c) for p, c in pairs]
    else:
        if halves:
            view.logprob_of_batch(pairs[: len(pairs) // 2])
        sums = view.logprob_of_batch(pairs)
    for (prompt, completion), got in zip(pairs, sums, strict=True):
        check_logprob_of(
            got, plain, prompt, completion, f"{where} logprob_of {prompt!r}+{completion!r}", tol
        )
