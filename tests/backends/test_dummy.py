"""The numpy dummy backend: the deterministic test double every later issue stands on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest

from swayscope.backends.api import RollingLogprob, ScoringView, TokenDist
from swayscope.backends.dummy import DummyBackend, DummyView, decode
from swayscope.errors import InputError, ViewError
from swayscope.instrumentation import BackendInstrumentation, CacheLookup

PROMPTS = ["The capital of France is", "Once upon a time", "def f(x):", "ünïcödé ✓"]
VOCAB = 64


def full_dist(view: DummyView, prompt: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The whole next-token log-distribution, indexed by token id."""
    d = view.next_token_dist(prompt, top_k=VOCAB)
    out = np.full(VOCAB, -np.inf)
    out[d.token_ids] = d.logprobs
    return out


def kl(p_log: np.ndarray[Any, Any], q_log: np.ndarray[Any, Any]) -> float:
    p = np.exp(p_log)
    return float((p * (p_log - q_log)).sum())


def digest() -> dict[str, Any]:
    """What the determinism check compares; also run in a separate process."""
    b = DummyBackend(seed=3)
    out: dict[str, Any] = {}
    views: list[tuple[str, AbstractContextManager[DummyView]]] = [
        ("base", b.base()),
        ("ft", b.ft()),
        ("scaled", b.scaled(0.5)),
        ("null", b.null(7)),
    ]
    for name, ctx in views:
        with ctx as v:
            d = v.next_token_dist(PROMPTS[0], top_k=5)
            out[name] = {
                "ids": d.token_ids.tolist(),
                "lp": [round(x, 12) for x in d.logprobs.tolist()],
                "tail": round(d.tail_logprob, 12),
                "roll": round(v.rolling_logprob(PROMPTS[1]).total, 12),
                "lpo": round(v.logprob_of(PROMPTS[2], " return x"), 12),
                "gen": v.generate(PROMPTS[3], max_new_tokens=8).text,
            }
    return out


DIGEST_PROGRAM = (
    "import json, sys\n"
    f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
    "from test_dummy import digest\n"
    "print(json.dumps(digest(), sort_keys=True))\n"
)


def test_deterministic_across_processes() -> None:
    outputs = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        proc = subprocess.run(
            [sys.executable, "-c", DIGEST_PROGRAM],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0] == json.loads(json.dumps(digest(), sort_keys=True))


def test_seed_changes_the_model() -> None:
    a, b = DummyBackend(seed=0), DummyBackend(seed=1)
    with a.base() as va, b.base() as vb:
        assert not np.allclose(full_dist(va, PROMPTS[0]), full_dist(vb, PROMPTS[0]))


def test_view_ids_and_kinds() -> None:
    b = DummyBackend()
    with b.base() as v:
        assert (v.id, v.kind) == ("base", "base")
    with b.ft() as v:
        assert (v.id, v.kind) == ("ft", "ft")
    with b.scaled(0.5) as v:
        assert (v.id, v.kind) == ("scaled_0.5", "scaled")
    with b.scaled(0) as v:
        assert v.id == "base"
    with b.scaled(1) as v:
        assert v.id == "ft"
    with b.null(42) as v:
        assert v.kind == "null"
        assert v.id.startswith("null_42")
    with b.base() as v:
        assert isinstance(v, ScoringView)


def test_per_view_distributions_differ_and_scaled_lies_between() -> None:
    b = DummyBackend()
    dists: dict[str, Any] = {}
    for name, ctx in (
        ("base", b.base()),
        ("ft", b.ft()),
        ("half", b.scaled(0.5)),
        ("null", b.null(1)),
        ("null2", b.null(2)),
    ):
        with ctx as v:
            dists[name] = [full_dist(v, p) for p in PROMPTS]
    for i in range(len(PROMPTS)):
        base, ft, half = dists["base"][i], dists["ft"][i], dists["half"][i]
        assert not np.allclose(base, ft)
        assert not np.allclose(half, base) and not np.allclose(half, ft)
        whole = kl(ft, base)
        assert 0 < kl(half, base) < whole
        assert 0 < kl(ft, half) < whole
        assert not np.allclose(dists["null"][i], base)
        assert not np.allclose(dists["null"][i], dists["null2"][i])
        # Every distribution is normalised.
        for d in (base, ft, half):
            assert np.isclose(np.exp(d).sum(), 1.0)


def test_scaled_zero_and_one_compute_base_and_ft() -> None:
    # Separate backends, so equality comes from the model, not from a shared cache entry.
    for lam, plain in ((0.0, "base"), (1.0, "ft")):
        b1, b2 = DummyBackend(), DummyBackend()
        with b1.scaled(lam) as s, getattr(b2, plain)() as v:
            assert s.id == v.id == plain
            for p in PROMPTS:
                np.testing.assert_array_equal(full_dist(s, p), full_dist(v, p))


def test_views_route_through_the_shared_cache() -> None:
    b = DummyBackend()
    with b.ft() as v:
        first = v.next_token_dist(PROMPTS[0], top_k=8)
        second = v.next_token_dist(PROMPTS[0], top_k=8)
    assert first is second
    with b.base() as v:
        v.next_token_dist(PROMPTS[0], top_k=8)
    s = b.inst.stats
    assert (s.cache_hits, s.cache_misses) == (1, 2)


def test_token_dist_shape_and_tokens() -> None:
    b = DummyBackend()
    with b.base() as v:
        d = v.next_token_dist(PROMPTS[0], top_k=5)
        assert isinstance(d, TokenDist)
        assert d.top_k == 5
        assert d.vocab_size == VOCAB
        assert list(d.logprobs) == sorted(d.logprobs, reverse=True)
        assert d.n_tokens == len(PROMPTS[0].encode())
        assert np.isclose(np.exp(d.logprobs).sum() + np.exp(d.tail_logprob), 1.0)
        r = v.rolling_logprob(PROMPTS[1])
        assert isinstance(r, RollingLogprob)
        assert r.n_tokens == len(PROMPTS[1].encode())
        assert r.logprobs.shape == (r.n_tokens - 1,)
        assert (r.logprobs < 0).all()
        assert v.logprob_of(PROMPTS[0], " Paris") < 0


def _serial_and_batched(view_factory: str, *args: Any) -> Iterator[tuple[Any, Any]]:
    serial_b, batch_b = DummyBackend(), DummyBackend()
    with getattr(serial_b, view_factory)(*args) as s, getattr(batch_b, view_factory)(*args) as bv:
        prompts = [*PROMPTS, PROMPTS[0]]
        yield (
            [s.next_token_dist(p, top_k=7) for p in prompts],
            bv.next_token_dist_batch(prompts, top_k=7),
        )
        yield ([s.rolling_logprob(p) for p in prompts], bv.rolling_logprob_batch(prompts))
        pairs = [(p, " and more") for p in prompts]
        yield ([s.logprob_of(p, c) for p, c in pairs], bv.logprob_of_batch(pairs))


@pytest.mark.parametrize(
    "factory,args", [("base", ()), ("ft", ()), ("scaled", (0.25,)), ("null", (3,))]
)
def test_batched_forms_equal_serial(factory: str, args: tuple[Any, ...]) -> None:
    for serial, batched in _serial_and_batched(factory, *args):
        assert len(serial) == len(batched)
        for a, b in zip(serial, batched, strict=True):
            if isinstance(a, float):
                assert a == b
                continue
            np.testing.assert_array_equal(a.token_ids, b.token_ids)
            np.testing.assert_array_equal(a.logprobs, b.logprobs)
            assert a.n_tokens == b.n_tokens


def test_batched_forms_send_one_forward_call() -> None:
    b = DummyBackend()
    with b.base() as v:
        v.next_token_dist_batch(PROMPTS, top_k=4)
        v.next_token_dist_batch(PROMPTS, top_k=4)
    s = b.inst.stats
    assert s.forward_calls == 1
    assert s.forward_passes == len(PROMPTS)
    assert s.cache_hits == len(PROMPTS)


def test_one_view_at_a_time() -> None:
    b = DummyBackend()
    with b.base(), pytest.raises(ViewError, match="'base'"), b.ft():
        pass
    # The failed enter left nothing active: entering works again.
    with b.ft() as v:
        assert v.id == "ft"
    with pytest.raises(ViewError), b.scaled(0.5), b.null(1):
        pass
    with b.null(1) as v:
        assert v.kind == "null"


def test_view_released_after_an_exception() -> None:
    b = DummyBackend()
    with pytest.raises(KeyError), b.ft():
        raise KeyError("probe failed")
    with b.base() as v:
        assert v.id == "base"


def test_dummy_uses_a_given_instrumentation_and_probe_labels() -> None:
    from sway_testing import Recorder  # here: other processes import this file by path

    col = Recorder()
    inst = BackendInstrumentation(exporters=[col])
    b = DummyBackend(inst=inst)
    assert b.inst is inst
    assert inst.model_name == "dummy"
    with inst.probe("delta_kl"), b.ft() as v:
        v.next_token_dist(PROMPTS[0], top_k=3)
    (lookup,) = [e for e in col.events if isinstance(e, CacheLookup)]
    assert (lookup.probe, lookup.view_id, lookup.n_tokens) == ("delta_kl", "ft", len(PROMPTS[0]))
    b.close()


@pytest.mark.parametrize("top_k", [0, -1, True, 2.5])
def test_bad_top_k(top_k: Any) -> None:
    b = DummyBackend()
    with b.base() as v:
        with pytest.raises(InputError, match="top_k"):
            v.next_token_dist(PROMPTS[0], top_k=top_k)
        with pytest.raises(InputError, match="top_k"):
            v.next_token_dist_batch(PROMPTS, top_k=top_k)
    assert b.inst.stats.total_lookups == 0


@pytest.mark.parametrize("prompt", ["", "   ", "\n"])
def test_empty_prompt(prompt: str) -> None:
    b = DummyBackend()
    with b.base() as v:
        with pytest.raises(InputError, match="empty"):
            v.next_token_dist(prompt)
        with pytest.raises(InputError, match="empty"):
            v.rolling_logprob(prompt)
        with pytest.raises(InputError, match="empty"):
            v.logprob_of(prompt, " x")
        with pytest.raises(InputError, match="empty"):
            v.logprob_of("ok", prompt)
        with pytest.raises(InputError, match="empty"):
            v.next_token_dist_batch(["fine", prompt])
        with pytest.raises(InputError, match="empty"):
            v.rolling_logprob_batch([prompt])
        with pytest.raises(InputError, match="empty"):
            v.logprob_of_batch([("fine", prompt)])
    assert b.inst.stats.total_lookups == 0


def test_bad_view_arguments() -> None:
    b = DummyBackend()
    with pytest.raises(InputError):
        b.scaled(float("nan"))
    with pytest.raises(InputError):
        b.null(-1)
    with pytest.raises(InputError):
        b.null(1, init_scale=0)
    # InputError is a ValueError, as callers of a v0-era backend would catch.
    with pytest.raises(ValueError):
        b.scaled(float("inf"))


def test_generation_is_greedy_and_the_same_alone_and_in_a_batch() -> None:
    b = DummyBackend()
    with b.ft() as v:
        batch = v.generate_batch(PROMPTS, max_new_tokens=6)
        first = batch[0]
        assert first.n_generated == 6 and first.finish == "length"
        assert first.n_tokens == len(b.tokenize(PROMPTS[0]))
        # Greedy: each generated character is the argmax after the prompt and what came before.
        step = full_dist(v, PROMPTS[0])
        assert first.text[0] == decode([int(np.argmax(step))])
        assert len({g.text for g in batch}) == len(PROMPTS)
    other = DummyBackend()
    with other.ft() as v:
        assert [v.generate(p, max_new_tokens=6) for p in PROMPTS] == batch
    with other.base() as v:
        assert v.generate(PROMPTS[0], max_new_tokens=6) != first


def test_generation_stops_at_the_first_stop_string_and_keys_the_cache_on_it() -> None:
    b = DummyBackend()
    with b.ft() as v:
        free = v.generate(PROMPTS[1], max_new_tokens=12)
        stop = free.text[4:6]
        cut = v.generate(PROMPTS[1], max_new_tokens=12, stop=[stop, "never-there"])
        assert cut.finish == "stop"
        assert cut.text == free.text[: free.text.index(stop)]
        assert cut.n_generated == free.text.index(stop) + len(stop)
        assert v.generate(PROMPTS[1], max_new_tokens=12, stop=["never-there", stop]) == cut
        assert v.generate(PROMPTS[1], max_new_tokens=11).n_generated == 11
    s = b.inst.stats
    assert (s.cache_misses, s.cache_hits) == (3, 1)


def test_bad_generation_arguments() -> None:
    b = DummyBackend()
    with b.ft() as v:
        with pytest.raises(InputError, match="max_new_tokens"):
            v.generate("x", max_new_tokens=0)
        with pytest.raises(InputError, match="not one string"):
            v.generate_batch(["x"], stop="\n")
        with pytest.raises(InputError, match="empty"):
            v.generate_batch(["x", " "])
    assert b.inst.stats.total_lookups == 0
