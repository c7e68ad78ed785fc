"""``swayscope run --ray``: a run on a pool (joining the session's cluster by address), its bad
input (exit 2 before any probe, naming the setting), and Ctrl-C (no worker outlives it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from ray_testing import CLUSTER_CPUS, need_ray
from sway_testing import descendants, popen_swayscope, stop_with, swayscope

from swayscope.backends.ray.cluster import PROBE_TIMEOUT_S

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths

SUITE = """\
version: 1
name: ray-cli
models:
  kind: hf
  base: {base}
  adapter: {adapter}
{workers}defaults:
  threads: 1
suite:
  - kind: null_adapter
    n: 2
  - kind: delta_kl
  - kind: adapter_ablation
"""


def write_suite(tmp_path: Path, base: Path, adapter: Path, workers: str = "") -> Path:
    spec = tmp_path / "suite.yaml"
    spec.write_text(SUITE.format(base=base, adapter=adapter, workers=workers))
    return spec


def test_a_run_on_two_workers_matches_the_run_in_process(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths
) -> None:
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    local, pooled = tmp_path / "local.json", tmp_path / "pool.json"
    # Each computes every pass (no disk cache): the two ways of computing are compared.
    out = swayscope(tmp_path, "run", str(spec), "--json", str(local), "--no-disk-cache")
    assert out.returncode == 0, out.stderr
    out = swayscope(tmp_path, "run", str(spec), "--ray", ray_address, "--workers", "2",
                    "--json", str(pooled), "--no-disk-cache", timeout=240)
    assert out.returncode == 0, out.stderr
    assert "workers: 2 on the Ray cluster at" in out.stdout and "no worker lost" in out.stdout
    want, got = json.loads(local.read_text()), json.loads(pooled.read_text())
    for w, g in zip(want["probes"], got["probes"], strict=True):
        assert g["verdict"] == w["verdict"]
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
    for key in ("cache_hits", "cache_misses", "forward_passes", "n_tokens"):
        assert got["backend_stats"][key] == want["backend_stats"][key], key
    pool = got["models"]["workers"]
    assert pool["count"] == 2 and pool["failures"] == 0
    assert [w["worker"] for w in pool["workers"]] == ["0", "1"]


def test_an_unreachable_address_exits_2_naming_the_flag(
    tmp_path: Path, tiny_model: TinyModelPaths
) -> None:
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    trace = tmp_path / "t.jsonl"
    out = swayscope(tmp_path, "run", str(spec), "--ray", "127.0.0.1:9", "--trace", str(trace))
    assert out.returncode == 2, out.stderr
    assert "--ray" in out.stderr and "'127.0.0.1:9'" in out.stderr
    assert "cannot be reached" in out.stderr and "Traceback" not in out.stderr
    assert not trace.exists()


class _Listener:
    """A TCP port on 127.0.0.1 that is not a Ray head: it accepts and says nothing (a
    wrong port), or answers HTTP (the dashboard); records what each connection sent."""

    def __init__(self, http: bool) -> None:
        self.http = http
        self.sent: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(64)
            self.sent.append(data)
            if self.http and data:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass

    def spoken_to(self) -> bool:
        """Whether a client began a protocol (Ray's probe: gRPC's HTTP/2 preface)."""
        return any(data.startswith(b"PRI * HTTP/2.0") for data in self.sent)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(params=["silent", "http"])
def listener(request: pytest.FixtureRequest) -> Iterator[_Listener]:
    need_ray()
    port = _Listener(http=request.param == "http")
    yield port
    port.close()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_port_that_is_not_a_ray_head_exits_2_in_seconds(
    tmp_path: Path, tiny_model: TinyModelPaths, listener: _Listener, scheme: str
) -> None:
    """A port that accepts connections but is not Ray: ray.init waited forever (host:port),
    or 38 s (ray://)."""
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    address = f"{scheme}127.0.0.1:{listener.port}"
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(spec), "--ray", address, timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    assert f"swayscope: error: --ray: {address!r} is not a Ray head node" in out.stderr
    assert ("did not answer" if not listener.http else "does not speak gRPC") in out.stderr
    assert "Traceback" not in out.stderr and took < 30, took


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_joining_ends_the_run_in_seconds(
    tmp_path: Path, tiny_model: TinyModelPaths, signum: int
) -> None:
    need_ray()
    port = _Listener(http=False)
    try:
        spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
        proc = popen_swayscope(tmp_path, "run", str(spec), "--ray", f"127.0.0.1:{port.port}")
        deadline = time.monotonic() + 60
        while not port.spoken_to() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()[1]
        sent = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        port.close()
    assert proc.returncode == 2, stderr
    assert "interrupted before the run started" in stderr and "Traceback" not in stderr
    assert took < 3, f"{took:.1f} s after the signal (the probe waits {PROBE_TIMEOUT_S:g} s)"


def test_a_malformed_address_in_the_spec_names_its_line(
    tmp_path: Path, tiny_model: TinyModelPaths
) -> None:
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir,
                       workers="  workers:\n    address: nowhere\n")
    out = swayscope(tmp_path, "run", str(spec))
    assert out.returncode == 2, out.stderr
    assert "suite.yaml:8" in out.stderr and "models.workers.address" in out.stderr
    assert "'nowhere'" in out.stderr


def test_more_workers_than_the_cluster_has_exits_2_naming_the_flag(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths
) -> None:
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    too_many = str(CLUSTER_CPUS + 1)
    out = swayscope(tmp_path, "run", str(spec), "--ray", ray_address, "--workers", too_many)
    assert out.returncode == 2, out.stderr
    assert f"--workers: {too_many} workers" in out.stderr
    assert f"has {CLUSTER_CPUS:g}" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("where", ["joined", "local", "spec"])
def test_a_20_digit_worker_count_exits_2_before_any_worker_is_made(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths, where: str
) -> None:
    """One worker config per worker was built before the resources were checked: memory grew
    ~40 MB/s with no message. A local cluster's CPUs are checked before it starts."""
    huge = "100000000000000000000"
    workers = f"  workers:\n    count: {huge}\n" if where == "spec" else ""
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir, workers=workers)
    flags = {"joined": ["--ray", ray_address, "--workers", huge],
             "local": ["--ray", "--workers", huge], "spec": []}[where]
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(spec), *flags, timeout=60)
    assert out.returncode == 2, out.stderr
    source = f"{spec}:8: models.workers.count" if where == "spec" else "--workers"
    assert f"swayscope: error: {source}: {huge} workers of 1 CPUs each need 1e+20 CPUs" \
        in out.stderr
    assert "Traceback" not in out.stderr and time.monotonic() - started < 30


@pytest.mark.parametrize(("key", "value"), [("cpus", "1e-300"), ("cpus", ".inf"),
                                            ("gpus", "0.00001")])
def test_a_worker_share_ray_cannot_reserve_exits_2_naming_it(
    tmp_path: Path, tiny_model: TinyModelPaths, key: str, value: str
) -> None:
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir,
                       workers=f"  workers:\n    {key}: {value}\n")
    out = swayscope(tmp_path, "run", str(spec), timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"suite.yaml:8: models.workers.{key}:" in out.stderr and "Traceback" not in out.stderr


def test_workers_without_a_model_kind_that_has_one_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "suite.yaml"
    spec.write_text("version: 1\nmodels:\n  kind: dummy\n  workers:\n    count: 2\n"
                    "suite:\n  - kind: delta_kl\n")
    out = swayscope(tmp_path, "run", str(spec))
    assert out.returncode == 2 and "models.workers needs models.kind 'hf'" in out.stderr


def test_a_model_the_workers_cannot_load_exits_2_with_their_error(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths
) -> None:
    """The driver only reads the tokenizer; the weights are broken, so each worker fails."""
    base = tmp_path / "broken-base"
    shutil.copytree(tiny_model.base_dir, base)
    weights = next(base.glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    spec = write_suite(tmp_path, base, tiny_model.adapter_dir)
    result = tmp_path / "r.json"
    out = swayscope(tmp_path, "run", str(spec), "--ray", ray_address, "--json", str(result),
                    timeout=240)
    assert out.returncode == 2, out.stderr
    assert "models.base / models.adapter" in out.stderr
    assert "could not load the model" in out.stderr and "SafetensorError" in out.stderr
    assert "Traceback" not in out.stderr and not result.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_the_pool_and_leaves_no_worker(
    tmp_path: Path, ray_address: str, tiny_model: TinyModelPaths
) -> None:
    spec = tmp_path / "suite.yaml"
    prompts = "".join(f"      - 'Prompt number {i} of a long suite'\n" for i in range(400))
    spec.write_text(
        f"version: 1\nmodels:\n  kind: hf\n  base: {tiny_model.base_dir}\n"
        f"  adapter: {tiny_model.adapter_dir}\ndefaults:\n  threads: 1\n  max_batch_size: 2\n"
        f"suite:\n  - kind: delta_kl\n    prompts:\n{prompts}"
    )
    trace, result = tmp_path / "t.jsonl", tmp_path / "r.json"
    proc = popen_swayscope(
        tmp_path, "run", str(spec), "--ray", ray_address, "--trace", str(trace),
        "--json", str(result),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if trace.exists() and trace.stat().st_size > 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"the run never computed a forward call: {proc.communicate()[1][-2000:]}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    data = json.loads(result.read_text())
    assert data["status"] == "interrupted"
    pids = [w["pid"] for w in data["models"]["workers"]["workers"]]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "a worker outlived the interrupted run"


def _commands(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("phase", ["gcs_server", "ForwardWorker"])
def test_a_signal_while_a_local_pool_starts_exits_2_in_10_s_and_leaves_no_process(
    tmp_path: Path, tiny_model: TinyModelPaths, signum: int, phase: str
) -> None:
    """Ctrl-C or SIGTERM while the local cluster starts (its GCS is up) or while the
    workers load the model: exit 2 (SIGTERM was exit 15: ray.init takes SIGTERM over),
    and no Ray process of the run outlives it."""
    need_ray()
    spec = write_suite(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    log = tmp_path / "log"
    proc = popen_swayscope(tmp_path, "run", str(spec), "--ray", "--workers", "1", log=log)
    seen: set[int] = set()
    deadline = time.monotonic() + 180
    while not any(phase in c for c in _commands(seen)):
        seen |= descendants(proc.pid)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {phase} process came up: {log.read_text()[-3000:]}")
        time.sleep(0.02)
    stopped = stop_with(proc, signum, seen)
    assert proc.returncode == 2, log.read_text()[-3000:]
    assert "interrupted before the run started" in log.read_text()
    assert stopped.seconds < 10 and not stopped.left, (stopped, _commands(stopped.left))


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (["run", "s.yaml", "--ray"], ["run", "s.yaml", "--ray=local"]),
        (["run", "--ray", "s.yaml"], ["run", "--ray=local", "s.yaml"]),
        (["run", "--ray", "--workers", "2", "s.yaml"],
         ["run", "--ray=local", "--workers", "2", "s.yaml"]),
        (["run", "--ray", "10.0.0.5:6379", "s.yaml"], ["run", "--ray", "10.0.0.5:6379", "s.yaml"]),
        (["run", "--ray", "ray://head:10001"], ["run", "--ray", "ray://head:10001"]),
        (["run", "--ray", "auto", "s.yaml"], ["run", "--ray", "auto", "s.yaml"]),
        (["run", "--ray=auto", "s.yaml"], ["run", "--ray=auto", "s.yaml"]),
    ],
)
def test_ray_flag_value_is_optional(args: list[str], want: list[str]) -> None:
    from swayscope.cli.flags import with_optional_values

    assert with_optional_values(args) == want


def test_the_report_shows_the_pool_and_its_lost_parts() -> None:
    from swayscope.suite.report import footer_lines
    from swayscope.suite.result import SuiteResult

    pool = {"count": 2, "cluster": "a local Ray cluster (2 CPUs, 0 GPUs)",
            "threads_per_worker": 1, "failures": 0}
    quiet = SuiteResult(run_id="r", suite="s", models={"workers": pool})
    lost = SuiteResult(run_id="r", suite="s", models={"workers": {**pool, "failures": 3}})
    (line,) = [x for x in footer_lines(quiet) if x.startswith("workers:")]
    assert line.startswith("workers: 2 on a local Ray cluster") and "no worker lost" in line
    (line,) = [x for x in footer_lines(lost) if x.startswith("workers:")]
    assert "3 part(s) of forward calls lost with a worker" in line
    assert "swayscope_worker_failures_total" in line
