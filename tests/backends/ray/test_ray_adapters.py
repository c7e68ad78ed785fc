"""A worker given one adapter after another on the base it loaded once (the class in
process, no cluster): each part computes under the adapter it names, a swap that fails
is rolled back, and a part naming an adapter the worker does not hold (a restarted
worker, a part retried away from home) has it attached before it is computed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from ray_testing import need_ray

if TYPE_CHECKING:
    from swayscope.backends.ray.worker import ForwardWorker
    from swayscope.backends.tiny import TinyModelPaths

TEXTS = ["The baker opens his shop before dawn", "Unrelated text about rivers and hills"]
TOP_K = 16


def ref(path: Path) -> Any:
    from swayscope.backends.hf.loading import adapter_content_hash
    from swayscope.backends.ray.messages import AdapterRef

    return AdapterRef(str(path), adapter_content_hash(path))


def broken_copy(adapter: Path, tmp_path: Path) -> Path:
    """``adapter``'s folder with its weights replaced by garbage: its config reads (the
    driver's check passes), the swap on the worker fails."""
    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    return broken


def ft_records(worker: ForwardWorker, adapter: Any | None) -> list[Any]:
    """The fine-tuned view's records of TEXTS as the worker computes them for a part that
    names ``adapter``."""
    from swayscope.backends.hf.view_state import TRAINED
    from swayscope.backends.ray.messages import CallRequest

    ids = [worker._loaded().encoder.tokenize(t) for t in TEXTS]
    reply = worker.compute(CallRequest(ids, "ft", TRAINED, "last", None, 0, adapter=adapter))
    assert reply.error is None, reply.error
    return list(reply.records)


def reference(tiny_model: TinyModelPaths, adapter: Path) -> list[Any]:
    """The same records from a backend loaded with ``adapter``, in process."""
    from swayscope.backends.hf import HFBackend

    backend = HFBackend(
        tiny_model.base_dir, adapter, device="cpu", threads=1, max_top_k=TOP_K,
        prefix_cache_max_bytes=0,
    )
    try:
        ids = [backend.encoder.tokenize(t) for t in TEXTS]
        return backend.forward_pass.compute(ids, view_id="ft", need="last")
    finally:
        backend.close()


def same(got: list[Any], want: list[Any]) -> bool:
    return all(
        np.array_equal(g.dist.token_ids, w.dist.token_ids)
        and np.allclose(g.dist.logprobs, w.dist.logprobs, atol=1e-6)
        for g, w in zip(got, want, strict=True)
    )


@pytest.fixture(scope="module")
def worker(tiny_model: TinyModelPaths, checkpoints: Path) -> ForwardWorker:
    need_ray()
    from swayscope.backends.ray.messages import WorkerConfig
    from swayscope.backends.ray.worker import ForwardWorker

    config = WorkerConfig(
        index=0, base_path=str(tiny_model.base_dir),
        adapter_path=str(checkpoints / "step-00000"), gguf_file=None, device="cpu",
        dtype="auto", max_top_k=TOP_K, max_batch_size=8, max_batch_tokens=4096,
        prefix_cache_max_bytes=0, threads=1,
    )
    loaded = ForwardWorker(config)
    assert loaded.facts().error is None
    return loaded


def test_attach_swaps_the_adapter_on_the_loaded_base_and_rolls_a_failed_one_back(
    worker: ForwardWorker, tiny_model: TinyModelPaths, checkpoints: Path, tmp_path: Path
) -> None:
    six = checkpoints / "step-00006"
    backend = worker._loaded()
    base_model = backend.model.get_base_model()
    reply = worker.attach(ref(six))
    assert reply.error is None and reply.load_s > 0 and reply.lora_rank == 8
    assert backend.model.get_base_model() is base_model  # the base was not loaded again
    want = reference(tiny_model, six)
    assert same(ft_records(worker, None), want)
    assert worker.attach(ref(six)).load_s == 0.0  # held already: nothing to do
    failed = worker.attach(ref(broken_copy(six, tmp_path)))
    assert failed.error is not None and "cannot attach adapter" in failed.error
    # Rolled back: the previous adapter is in place and computes as before.
    assert backend.adapter_hash == ref(six).content
    assert same(ft_records(worker, None), want)


def test_a_part_naming_another_adapter_has_it_attached_before_it_is_computed(
    worker: ForwardWorker, tiny_model: TinyModelPaths, checkpoints: Path
) -> None:
    from swayscope.backends.hf.view_state import ViewState
    from swayscope.backends.ray.messages import CallRequest

    two = checkpoints / "step-00002"
    assert same(ft_records(worker, ref(two)), reference(tiny_model, two))
    assert worker._loaded().adapter_hash == ref(two).content
    # A null view's state set, then a part for another adapter: the swap starts from the
    # adapter as trained, and the part computes under its own view.
    ids = [worker._loaded().encoder.tokenize(TEXTS[0])]
    null = worker.compute(CallRequest(ids, "null", ViewState(null=(3, 1.0, 1.0)), "last", None, 0))
    assert null.error is None
    four = checkpoints / "step-00004"
    assert same(ft_records(worker, ref(four)), reference(tiny_model, four))
