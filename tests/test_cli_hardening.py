"""The CLI under careless and hostile input: each test names what it protects (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from sway_testing import (
    DUMMY_SPEC,
    cli_env,
    descendants,
    popen_swayscope,
    stop_with,
    swayscope,
    write_spec,
)

from swayscope.errors import SwayscopeError

if TYPE_CHECKING:
    from swayscope.backends.tiny import TinyModelPaths


def _spec(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- outputs ------------------------------------------------------------------------------------


def test_same_file_for_trace_and_json_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out_file = tmp_path / "out.jsonl"
    out_file.write_text('{"earlier": "run"}\n')
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--trace", str(out_file),
                    "--json", str(out_file))
    assert out.returncode == 2
    assert "--trace" in out.stderr and "--json" in out.stderr and "own file" in out.stderr
    assert out_file.read_text() == '{"earlier": "run"}\n'


def test_same_file_through_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    (tmp_path / "link.json").symlink_to(target)
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--json", str(target),
                    "--markdown", str(tmp_path / "link.json"))
    assert out.returncode == 2 and "own file" in out.stderr


@pytest.mark.parametrize("where", ["under_a_file", "a_folder", "a_fifo"])
def test_unwritable_output_fails_before_the_model_loads(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    if where == "under_a_file":
        blocker.write_text("x")
        target = blocker / "r.json"
    elif where == "a_folder":
        blocker.mkdir()
        target = blocker
    else:
        os.mkfifo(blocker)
        target = blocker
    trace = tmp_path / "t.jsonl"
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path, latency=50.0)), "--json",
                    str(target), "--trace", str(trace))
    assert out.returncode == 2, out.stdout
    assert "--json" in out.stderr and str(target) in out.stderr
    assert not trace.exists()
    assert time.monotonic() - started < 30  # nothing ran (the suite would take minutes)


def test_a_write_failure_at_the_end_exits_2_and_still_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from swayscope.cli import app
    from swayscope.suite import result as result_module

    def disk_full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(result_module, "write_text_atomic", disk_full)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["run", str(write_spec(tmp_path)), "--json", "r.json"])
    assert out.exit_code == 2
    assert "could not write the result JSON" in out.output and "No space left" in out.output
    assert "5 pass" in out.output


def test_result_files_respect_the_umask_and_keep_an_existing_mode(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    fresh, kept = tmp_path / "fresh.json", tmp_path / "kept.md"
    kept.write_text("old")
    kept.chmod(0o640)
    old = os.umask(0o022)
    try:
        out = swayscope(tmp_path, "run", str(spec), "--json", str(fresh), "--markdown", str(kept))
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


# -- rendering -----------------------------------------------------------------------------------


def test_rich_markup_in_user_text_renders_literally_and_the_result_is_saved(
    tmp_path: Path,
) -> None:
    text = DUMMY_SPEC.format(strength=1.0, latency=0.0).replace("name: cli-test", "name: '[/]'")
    text = text.replace(
        "  - kind: delta_kl\n", "  - kind: delta_kl\n    name: '[INST] x [/INST]'\n"
    )
    result = tmp_path / "r.json"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)), "--json", str(result))
    assert out.returncode == 0, out.stderr
    assert "[INST] x [/INST]" in out.stdout and "'[/]'" in out.stdout
    assert json.loads(result.read_text())["suite"] == "[/]"


# -- spec input ----------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_fast_with_a_short_message(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 10)]
    bomb = "\n".join(["version: 1", *lines, "suite:", "  - kind: delta_kl", "    prompts: *a9"])
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, bomb)), timeout=60)
    assert out.returncode == 2 and "aliases" in out.stderr
    assert len(out.stderr) < 2000
    assert time.monotonic() - started < 30


def test_a_seed_that_would_overflow_an_rng_is_refused_with_its_line(tmp_path: Path) -> None:
    text = "version: 1\nmodels:\n  kind: dummy\ndefaults:\n  seed: 18446744073709551616\n" \
           "suite:\n  - kind: delta_kl\n"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2
    assert "suite.yaml:5" in out.stderr and "defaults.seed" in out.stderr


def test_a_lone_surrogate_in_a_prompt_is_refused_with_its_line(tmp_path: Path) -> None:
    text = 'version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n' \
           '    prompts: ["ok", "\\udcff abc"]\n'
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2
    assert "suite.yaml:6" in out.stderr and "invalid Unicode" in out.stderr
    assert "abc" not in out.stderr  # the prompt itself is not echoed


def test_a_lone_surrogate_in_spec_text_is_refused_with_its_line() -> None:
    from swayscope.suite.spec import load_suite_text

    with pytest.raises(SwayscopeError, match=r"^s\.yaml:4: the text is not valid Unicode"):
        load_suite_text('version: 1\nsuite:\n  - kind: delta_kl\n    prompts: ["a\udcffb"]\n',
                        "s.yaml")


def test_a_huge_bad_value_is_not_echoed_whole(tmp_path: Path) -> None:
    huge = "[" + ", ".join(["1"] * 50_000) + "]"
    text = f"version: 1\nmodels:\n  kind: dummy\ndefaults:\n  top_k: {huge}\n" \
           "suite:\n  - kind: delta_kl\n"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2 and "defaults.top_k" in out.stderr
    assert len(out.stderr) < 2000


def test_model_folder_errors_name_their_line(tmp_path: Path) -> None:
    text = "version: 1\nname: x\nmodels:\n  kind: hf\n  base: /no/such/base\n" \
           "  adapter: /no/such/adapter\nsuite:\n  - kind: delta_kl\n"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2 and "suite.yaml:5" in out.stderr and "models.base" in out.stderr


# -- privacy -------------------------------------------------------------------------------------


def test_credentials_in_endpoint_urls_never_reach_any_output(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result, md = tmp_path / "r.json", tmp_path / "r.md"
    out = swayscope(
        tmp_path, "run", str(write_spec(tmp_path)), "--json", str(result), "--markdown", str(md),
        "--otlp-endpoint", f"http://alice:hunter2@127.0.0.1:{closed}/v1/traces?token=tok3n",
        "--pushgateway", f"http://bob:s3cret@127.0.0.1:{closed}",
    )
    assert out.returncode == 0, out.stderr
    for text in (out.stdout, out.stderr, result.read_text(), md.read_text()):
        for secret in ("hunter2", "s3cret", "tok3n"):
            assert secret not in text
    assert "alice:***@" in result.read_text()


def test_keyed_prompt_hash_from_the_environment_reaches_the_trace(tmp_path: Path) -> None:
    import hashlib
    import hmac

    trace = tmp_path / "t.jsonl"
    env = {**cli_env(tmp_path), "SWAYSCOPE_PROMPT_HASH_KEY": "k3y"}
    text = "version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n" \
           "    prompts: ['my PIN is 4711', 'hello there']\n"
    proc = subprocess.run(
        [sys.executable, "-m", "swayscope", "run", str(_spec(tmp_path, text)), "--trace",
         str(trace)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    hashes = {json.loads(line)["prompt_hash"] for line in trace.read_text().splitlines()}
    keyed = hmac.new(b"k3y", b"my PIN is 4711", hashlib.sha256).hexdigest()[:12]
    unkeyed = hashlib.sha1(b"my PIN is 4711").hexdigest()[:12]
    assert keyed in hashes and unkeyed not in hashes


def test_a_non_loopback_metrics_address_warns(tmp_path: Path) -> None:
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--metrics-port", "0",
                    "--metrics-address", "0.0.0.0")
    assert out.returncode == 0, out.stderr
    assert "0.0.0.0" in out.stderr and "any host" in out.stderr


# -- signals -------------------------------------------------------------------------------------


SIGNALS = pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                                  ids=["ctrl-c", "sigterm"])


def _hf_spec(tmp_path: Path, base: Path, adapter: Path | None, prompts: int = 1) -> Path:
    """A suite on the tiny model; ``prompts``: delta_kl's (400 take a while, two at a time)."""
    listed = "".join(f"      - 'Prompt number {i} of a long suite'\n" for i in range(prompts))
    return _spec(tmp_path, f"version: 1\nmodels:\n  kind: hf\n  base: {base}\n"
                 + (f"  adapter: {adapter}\n" if adapter else "")
                 + f"defaults:\n  max_batch_size: 2\nsuite:\n  - kind: delta_kl\n"
                 f"    prompts:\n{listed}")


def _until(done: Callable[[], bool], proc: subprocess.Popen[str], log: Path, what: str) -> set[int]:
    """Wait (at most 120 s) for ``done``; the processes seen below ``proc`` meanwhile."""
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while not done():
        seen |= descendants(proc.pid)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"swayscope ended or took too long before {what}: {log.read_text()}")
        time.sleep(0.02)
    return seen


@SIGNALS
def test_a_signal_while_the_model_loads_exits_2_in_10_s_and_leaves_nothing(
    tmp_path: Path, tiny_model: TinyModelPaths, signum: int
) -> None:
    spec = _hf_spec(tmp_path, tiny_model.base_dir, tiny_model.adapter_dir)
    trace, log = tmp_path / "t.jsonl", tmp_path / "log"
    proc = popen_swayscope(tmp_path, "run", str(spec), "--trace", str(trace), log=log)
    # The trace opens just before the model starts to load.
    seen = _until(trace.exists, proc, log, "the model began to load")
    stopped = stop_with(proc, signum, seen)
    assert proc.returncode == 2, log.read_text()
    assert stopped.seconds < 10 and not stopped.left, stopped
    assert "interrupted before the run started" in log.read_text()
    assert not trace.exists()


@SIGNALS
def test_a_signal_during_the_run_exits_2_in_10_s_and_keeps_the_result(
    tmp_path: Path, signum: int
) -> None:
    trace, result, log = tmp_path / "t.jsonl", tmp_path / "r.json", tmp_path / "log"
    proc = popen_swayscope(tmp_path, "run", str(write_spec(tmp_path, latency=50.0)), "--trace",
                           str(trace), "--json", str(result), log=log)
    seen = _until(lambda: trace.exists() and trace.stat().st_size > 0, proc, log, "the run")
    stopped = stop_with(proc, signum, seen)
    assert proc.returncode == 2, log.read_text()
    assert stopped.seconds < 10 and not stopped.left, stopped
    assert json.loads(result.read_text())["status"] == "interrupted"


@SIGNALS
def test_a_signal_during_a_sweep_exits_2_in_10_s_and_writes_the_summary(
    tmp_path: Path, tiny_model: TinyModelPaths, signum: int
) -> None:
    import shutil

    for step in (1, 2, 3):
        shutil.copytree(tiny_model.adapter_dir, tmp_path / "ckpt" / f"step-{step}")
    spec = _hf_spec(tmp_path, tiny_model.base_dir, None, prompts=400)
    out, trace, log = tmp_path / "sweep", tmp_path / "t.jsonl", tmp_path / "log"
    proc = popen_swayscope(tmp_path, "sweep", str(spec), "--adapters",
                           str(tmp_path / "ckpt" / "step-*"), "--out", str(out), "--trace",
                           str(trace), log=log)
    seen = _until(lambda: "delta_kl: started" in log.read_text(), proc, log, "the sweep's run")
    stopped = stop_with(proc, signum, seen)
    assert proc.returncode == 2, log.read_text()
    assert stopped.seconds < 10 and not stopped.left, stopped
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"


def test_ctrl_c_during_metrics_linger_keeps_the_runs_outcome(tmp_path: Path) -> None:
    result = tmp_path / "r.json"
    proc = popen_swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--metrics-port", "0",
                  "--metrics-linger", "60", "--json", str(result))
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("metrics stay up"):
            break
    time.sleep(1.0)  # into the linger
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "run's result stands" in stderr and "before the run started" not in stderr
    assert json.loads(result.read_text())["exit_code"] == 0


def test_terminal_escapes_in_names_are_neutralised_everywhere_rendered(tmp_path: Path) -> None:
    """Suite and probe names with ANSI and OSC 52 (clipboard write) sequences reach the report,
    the markdown, the log lines and error messages only as visible escapes."""
    text = DUMMY_SPEC.format(strength=1.0, latency=0.0).replace(
        "name: cli-test", 'name: "evil\\e]52;c;ZXZpbA==\\a\\e[2J"'
    )
    text = text.replace("  - kind: delta_kl\n", '  - kind: delta_kl\n    name: "dkl\\e[31mred"\n')
    md = tmp_path / "r.md"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)), "--markdown", str(md))
    assert out.returncode == 0, out.stderr
    for output in (out.stdout, out.stderr, md.read_text()):
        assert "\x1b" not in output and "\x07" not in output
    assert "\\x1b]52;c;" in out.stdout and "dkl\\x1b[31mred" in out.stderr
    bad = text.replace("kind: perplexity_shift", 'kind: "perplexity\\e]52;c;x\\a"')
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, bad, "bad.yaml")))
    assert out.returncode == 2 and "\x1b" not in out.stderr and "\\x1b]52" in out.stderr


# -- round 3 (issue 22): duplicate keys, spec size, NUL bytes, convert ---------------------------

_SWAY_FILE = """\
version: 1
models:
  base:
    kind: hf
    base: {base}
  ft:
    kind: hf
    base: {base}
    adapter: {adapter}
suite:
  - name: dk
    kind: delta_kl
    prompts: ["a b c"]
"""


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        # A second telemetry: block would turn prompt capture on behind the reviewed one.
        ("version: 1\nmodels:\n  kind: dummy\ntelemetry:\n  capture_prompts: false\nsuite:\n"
         "  - kind: delta_kl\ntelemetry:\n  capture_prompts: true\n", (4, 8), "telemetry"),
        # A later threshold: 0.0 would pass a probe that 0.5 fails.
        ("version: 1\nmodels:\n  kind: dummy\nsuite:\n  - kind: delta_kl\n    threshold: 0.5\n"
         "    threshold: 0.0\n", (6, 7), "suite.0.threshold"),
    ],
)
def test_a_key_given_twice_is_refused_naming_both_lines(
    tmp_path: Path, text: str, where: tuple[int, int], key: str
) -> None:
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    first, second = where
    assert f"swayscope: error: {tmp_path / 'suite.yaml'}:{second}: {key}:" in out.stderr
    assert f"suite.yaml:{first})" in out.stderr and "twice" in out.stderr


def test_a_key_given_twice_in_a_dlm_sway_file_is_refused_too(tmp_path: Path) -> None:
    text = _SWAY_FILE.format(base="/b", adapter="/a") + "    assert_mean_gte: 0.5\n" \
        "    assert_mean_gte: 0.0\n"
    for command in ("run", "convert"):
        out = swayscope(tmp_path, command, str(_spec(tmp_path, text, "sway.yaml")))
        assert out.returncode == 2, out.stdout
        assert "sway.yaml:15: suite.0.assert_mean_gte:" in out.stderr
        assert "sway.yaml:14)" in out.stderr


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    from swayscope.suite.spec import load_suite_text

    text = "version: 1\nmodels:\n  kind: dummy\nsuite:\n" \
        "  - &dk {kind: delta_kl, threshold: 0.5, name: a}\n  - <<: *dk\n    name: b\n"
    loaded = load_suite_text(text, "s.yaml")
    assert [p.spec.label for p in loaded.probes] == ["a", "b"]


def test_an_oversized_spec_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    from swayscope.suite.spec import MAX_SPEC_BYTES

    spec = tmp_path / "huge.yaml"
    with spec.open("w") as fh:
        fh.write("version: 1\nsuite:\n  - kind: delta_kl\n")
        fh.write(("# " + "x" * 1022 + "\n") * (MAX_SPEC_BYTES // 1024 + 1))
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(spec))
    assert out.returncode == 2 and "8 MB limit" in out.stderr and str(spec) in out.stderr
    assert time.monotonic() - started < 20


def test_a_spec_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from swayscope.suite.spec import load_suite_text

    made: list[str] = []

    class Counting(yaml.CSafeLoader):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            made.append(stream)
            super().__init__(stream)

    monkeypatch.setattr(yaml, "CSafeLoader", Counting)
    for name in ("compose", "safe_load", "load"):
        monkeypatch.setattr(yaml, name, lambda *a, **k: pytest.fail("parsed again"))
    loaded = load_suite_text(DUMMY_SPEC.format(strength=1.0, latency=0.0), "s.yaml")
    assert len(loaded.probes) == 5 and len(made) == 1


def test_a_nul_byte_in_the_trace_path_exits_2_naming_it(tmp_path: Path) -> None:
    text = "version: 1\nmodels:\n  kind: dummy\ntelemetry:\n  trace: \"t\\0x.jsonl\"\n" \
        "suite:\n  - kind: delta_kl\n"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "telemetry.trace (" in out.stderr and "suite.yaml:5)" in out.stderr
    assert "NUL" in out.stderr


@pytest.mark.parametrize(
    ("base", "why"),
    [('"/models/b\\0ase"', "NUL"), ("[/models/a, /models/b]", "one string"),
     ("{path: /models/b}", "one string")],
)
def test_a_dlm_sway_model_path_that_is_not_one_string_exits_2(
    tmp_path: Path, base: str, why: str
) -> None:
    spec = _spec(tmp_path, _SWAY_FILE.format(base=base, adapter="/a"), "sway.yaml")
    for command in ("run", "convert"):
        out = swayscope(tmp_path, command, str(spec))
        assert out.returncode == 2, (command, out.stdout)
        assert "Traceback" not in out.stderr and why in out.stderr
        assert "sway.yaml:5: models.base.base:" in out.stderr
        assert "sway.yaml:8: models.ft.base:" in out.stderr


def test_convert_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    text = _SWAY_FILE.format(base=tmp_path / "b", adapter=tmp_path / "a")
    spec = _spec(tmp_path, text, "sway.yaml")
    (tmp_path / "link.yaml").symlink_to(spec)
    for target in ("sway.yaml", str(spec), "./sub/../sway.yaml", "link.yaml"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        out = swayscope(tmp_path, "convert", "sway.yaml", "-o", target)
        assert out.returncode == 2, (target, out.stderr)
        assert "--output" in out.stderr and "replace the input" in out.stderr
        assert spec.read_text() == text


# -- markdown ------------------------------------------------------------------------------------

_HTML = "<img src=x onerror=alert(2)>"


def _rendered(markdown: str) -> str:
    """``markdown`` as a renderer that passes raw HTML through turns it into HTML."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown))


def test_html_in_names_is_never_live_in_the_run_markdown(tmp_path: Path) -> None:
    text = DUMMY_SPEC.format(strength=1.0, latency=0.0).replace(
        "name: cli-test", f"name: '{_HTML}'"
    ).replace(
        "  - kind: delta_kl\n", f"  - kind: delta_kl\n    name: '[x](javascript:y) {_HTML}'\n"
    )
    md = tmp_path / "r.md"
    out = swayscope(tmp_path, "run", str(_spec(tmp_path, text)), "--markdown", str(md))
    assert out.returncode == 0, out.stderr
    html = _rendered(md.read_text())
    assert "<img" not in html and "<a " not in html
    assert "<h1>suite '&lt;img src=x onerror=alert(2)&gt;'" in html  # shown as text


def test_html_in_names_is_never_live_in_the_sweep_markdown() -> None:
    from swayscope.probes.base import ProbeResult
    from swayscope.suite.result import SuiteResult
    from swayscope.suite.sweep.adapters import SweepAdapter
    from swayscope.suite.sweep.report import render_markdown
    from swayscope.suite.sweep.result import AdapterOutcome, SweepResult

    probe = ProbeResult(name=_HTML, kind="delta_kl", verdict="pass", score=0.5)
    outcomes = [
        AdapterOutcome(SweepAdapter(f"{_HTML}-step-{step}", Path(f"/a/{step}"), step, i),
                       "complete", result=SuiteResult(run_id="r", suite=_HTML, probes=[probe]))
        for i, step in enumerate((2, 4))
    ]
    sweep = SweepResult("s", _HTML, "/base", "step", adapters=outcomes)
    html = _rendered(render_markdown(sweep))
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=alert(2)&gt;-step-2") == 1


def test_an_output_name_too_long_for_its_temporary_file_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    """A result file is written through a temporary file ~22 bytes longer in name: a name
    that fits but whose temporary one does not used to fail after the run, losing it."""
    too_long = tmp_path / ("r" * 240 + ".json")
    started = time.monotonic()
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path, latency=50.0)), "--json",
                    str(too_long))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--json" in out.stderr and "temporary file's name" in out.stderr
    assert "over the 255 bytes" in out.stderr
    assert time.monotonic() - started < 30  # refused before the suite (minutes) ran
    fits = tmp_path / ("r" * 200 + ".json")
    out = swayscope(tmp_path, "run", str(write_spec(tmp_path)), "--json", str(fits))
    assert out.returncode == 0, out.stderr
    assert json.loads(fits.read_text())["exit_code"] == 0


# -- full disk -----------------------------------------------------------------------------------


class _SmallDisk(NamedTuple):
    folder: Path
    limit: Callable[[], None] | None
    """Run in the child: a file-size limit, where no file system could be mounted."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[_SmallDisk]:
    """A folder on a 1 MB file system (a tmpfs: writes fail with ENOSPC) when this process
    may mount one; else writes past 1 MB fail by a file-size limit (EFBIG)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield _SmallDisk(folder, None if mounted else _file_size_limit)
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def _file_size_limit() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.parametrize("command", ["tiny-model", "demo"])
def test_a_full_disk_exits_2_clearly_and_leaves_nothing_half_written(
    tmp_path: Path, small_disk: _SmallDisk, command: str
) -> None:
    pytest.importorskip("torch")
    home = small_disk.folder / "home"
    home.mkdir()
    env = {**cli_env(tmp_path), "SWAYSCOPE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    args = ["tiny-model", str(home / "tiny-model")] if command == "tiny-model" else ["demo"]
    out = subprocess.run([sys.executable, "-m", "swayscope", *args], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300,
                         preexec_fn=small_disk.limit)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"swayscope: error: cannot build the tiny model in {str(home / 'tiny-model')!r}" \
        in out.stderr
    assert ("No space left" if small_disk.limit is None else "File too large") in out.stderr
    assert list(home.iterdir()) == []  # no half-built model, no marker, no staging folder
