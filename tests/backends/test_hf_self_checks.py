"""The forward pass's start-up self-checks are loud: a check that fails or disagrees turns its
fast path off with exactly one WARNING naming the check, the model, what was turned off and
why; a healthy model logs none. Each failure is forced on the tiny model by breaking the
part the check exercises."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from swayscope.backends.hf import forward as forward_module
from swayscope.backends.hf.forward import ForwardPass

if TYPE_CHECKING:
    from swayscope.backends.hf import HFBackend
    from swayscope.backends.tiny import TinyModelPaths

LOGGER = "swayscope.backends.hf.forward"
PACKED_OFF = "turned off: the output head on needed positions only"
PREFIX_OFF = "shared-prefix reuse (every text runs whole instead"


def load(tiny: TinyModelPaths, **settings: Any) -> HFBackend:
    from swayscope.backends.hf import HFBackend

    return HFBackend(tiny.base_dir, tiny.adapter_dir, device="cpu", **settings)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def start(
    tiny: TinyModelPaths, caplog: pytest.LogCaptureFixture, **settings: Any
) -> tuple[HFBackend, str]:
    """A backend built with the checks watched; its one warning."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    backend = load(tiny, **settings)
    found = warnings_of(caplog)
    assert len(found) == 1, found
    message = found[0]
    assert "start-up self-check" in message, message
    assert f"on model {str(tiny.base_dir)!r} (llama): " in message, message
    return backend, message


class WrongHead(torch.nn.Module):
    """The model's output head, its scores scaled (or raising): what the packed path uses."""

    def __init__(self, head: torch.nn.Module, scale: float, fail: bool = False) -> None:
        super().__init__()
        self.head, self.scale, self.fail = head, scale, fail

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("the packed head broke")
        scores: torch.Tensor = self.head(states) * self.scale
        return scores


def wrong_head(monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
    real = forward_module.packed_head_parts

    def parts(model: Any) -> tuple[torch.nn.Module, torch.nn.Module] | None:
        found = real(model)
        assert found is not None
        return found[0], WrongHead(found[1], 1.5, fail)

    monkeypatch.setattr(forward_module, "packed_head_parts", parts)


def wrong_prefix(monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
    """Rows that start from a prefix get its keys and values doubled (or an error)."""
    real: Callable[..., Any] = ForwardPass._past

    def past(self: ForwardPass, *args: Any) -> Any:
        if fail:
            raise RuntimeError("the prefix store broke")
        return [(2 * k, 2 * v) for k, v in real(self, *args)]

    monkeypatch.setattr(ForwardPass, "_past", past)


def test_a_healthy_model_warns_nothing_and_runs_both_fast_paths(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    backend = load(tiny_model)
    try:
        assert warnings_of(caplog) == []
        assert backend.forward_pass.use_packed_head and backend.forward_pass.prefix_reuse
    finally:
        backend.close()


def test_a_disagreeing_packed_head_is_turned_off_with_one_warning(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_head(monkeypatch)
    backend, message = start(tiny_model, caplog)
    try:
        assert "self-check 'packed output head'" in message
        assert "the decoder's output through the output head and the model's own logits " \
            "differ by up to" in message
        assert "(allowed: 1e-04 plus 1e-04 of the value, in float32)" in message
        assert PACKED_OFF in message
        assert not backend.forward_pass.use_packed_head
        assert backend.forward_pass.prefix_reuse  # the other check ran on the full path
    finally:
        backend.close()


def test_a_failing_packed_head_is_turned_off_with_one_warning_saying_the_error(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_head(monkeypatch, fail=True)
    backend, message = start(tiny_model, caplog)
    try:
        assert "self-check 'packed output head'" in message
        assert "it failed: RuntimeError: the packed head broke" in message
        assert PACKED_OFF in message
        assert not backend.forward_pass.use_packed_head and backend.forward_pass.prefix_reuse
    finally:
        backend.close()


def test_disagreeing_prefix_reuse_is_turned_off_with_one_warning(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_prefix(monkeypatch)
    backend, message = start(tiny_model, caplog)
    try:
        assert "self-check 'shared-prefix reuse'" in message
        assert "texts run on a shared prefix's keys and values and the same texts run whole " \
            "differ by up to" in message
        assert f"turned off: {PREFIX_OFF}" in message
        assert not backend.forward_pass.prefix_reuse and backend.forward_pass.use_packed_head
    finally:
        backend.close()


def test_failing_prefix_reuse_says_it_failed_not_that_it_disagrees(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_prefix(monkeypatch, fail=True)
    backend, message = start(tiny_model, caplog)
    try:
        assert "self-check 'shared-prefix reuse'" in message
        assert "it failed: RuntimeError: the prefix store broke" in message
        assert "differ" not in message
        assert f"turned off: {PREFIX_OFF}" in message
        assert not backend.forward_pass.prefix_reuse and backend.forward_pass.use_packed_head
        # The traceback is there for whoever looks (DEBUG), the warning stays one line.
        assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
    finally:
        backend.close()


def test_a_failing_reference_run_turns_both_paths_off_with_one_warning(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference run keeps the first text's keys and values through the call's cache:
    a transformers whose cache the per-layer cache no longer fits fails here."""

    def broken_cache(*args: Any) -> Any:
        raise TypeError("Can't instantiate abstract class KeepRowsLayer")

    monkeypatch.setattr(forward_module, "CallCache", broken_cache)
    backend, message = start(tiny_model, caplog)
    try:
        assert "self-check 'forward pass reference run'" in message
        assert "it failed: TypeError: Can't instantiate abstract class KeepRowsLayer" in message
        assert PACKED_OFF in message and PREFIX_OFF in message
        assert not backend.forward_pass.use_packed_head and not backend.forward_pass.prefix_reuse
        with backend.ft() as view:  # the plain path still scores
            assert view.rolling_logprob("The lamp was lit at dusk.").n_tokens > 1
    finally:
        backend.close()


def test_prefix_reuse_off_by_setting_is_no_failure(
    tiny_model: TinyModelPaths, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    backend = load(tiny_model, prefix_cache_max_bytes=0)
    try:
        assert warnings_of(caplog) == []
        assert backend.forward_pass.use_packed_head and not backend.forward_pass.prefix_reuse
    finally:
        backend.close()
