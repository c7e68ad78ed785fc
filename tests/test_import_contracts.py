"""The layering contract, enforced: imports point down, the core knows no exporter, no cycles.

Every ``import`` in ``src/swayscope`` is read from the AST, module-level and
function-level alike (a function-level import must not hide what a
module-level one would break).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "swayscope"

#: Libraries that cost seconds or are optional extras: never imported at module level
#: outside the modules that exist to wrap them.
HEAVY = {
    "torch", "transformers", "peft", "safetensors", "tokenizers", "gguf",
    "opentelemetry", "prometheus_client", "ray", "grpc", "matplotlib",
}

#: The instrumentation core: events, cache, stats, the exporter interface, settings.
CORE = {
    "swayscope.instrumentation.vocabulary",
    "swayscope.instrumentation.hashing",
    "swayscope.instrumentation.redaction",
    "swayscope.instrumentation.events",
    "swayscope.instrumentation.tracecontext",
    "swayscope.instrumentation.calls",
    "swayscope.instrumentation.cache",
    "swayscope.instrumentation.stats",
    "swayscope.instrumentation.exporter",
    "swayscope.instrumentation.scopes",
    "swayscope.instrumentation.recording",
    "swayscope.instrumentation.core",
    "swayscope.instrumentation.settings",
}
#: What an exporter may depend on (besides its own package and heavy libraries).
EXPORTER_DEPS = {
    "swayscope",
    "swayscope.errors",
    "swayscope.instrumentation.vocabulary",
    "swayscope.instrumentation.events",
    "swayscope.instrumentation.exporter",
    "swayscope.instrumentation.settings",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    module_level: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = importer.split(".") if is_package else importer.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # `from pkg import submodule` depends on the submodule when it is one.
    out = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        as_path = SRC / Path(*candidate.split("."))
        out.append(candidate if as_path.with_suffix(".py").exists() or as_path.is_dir() else base)
    return out


def collect_imports() -> list[Import]:
    found: list[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        guarded = set()
        for node in tree.body:  # `if TYPE_CHECKING:` imports are for the type checker only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                guarded.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(name, path.name == "__init__.py", node)
            else:
                continue
            for target in targets:
                found.append(Import(name, target, node.lineno, id(node) in top_level))
    return found


IMPORTS = collect_imports()
OURS = [i for i in IMPORTS if i.imported.split(".")[0] == "swayscope"]


def layer(module: str) -> int:
    """Higher layers may import lower ones, never the reverse."""
    if module in ("swayscope.cli", "swayscope.__main__") or module.startswith("swayscope.cli."):
        return 7
    if module.startswith("swayscope.integrations"):
        return 6  # bridges to other tools: read their suites, instrument their runs
    if module.startswith(("swayscope.suite", "swayscope.trace_reader")):
        return 5
    if module.startswith("swayscope.probes"):
        return 4
    if module.startswith(("swayscope.backends", "swayscope.training")):
        return 3  # training builds adapters over backends' model folders; core never sees it
    if module in CORE:
        return 1
    if module.startswith("swayscope.instrumentation"):
        return 2  # the exporters, and the package facade with its v0 layer
    return 0  # swayscope, swayscope.errors


def where(i: Import) -> str:
    return f"{i.importer}:{i.line} imports {i.imported}"


def test_imports_point_down_only() -> None:
    bad = [where(i) for i in OURS if layer(i.imported) > layer(i.importer)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_core_imports_no_exporter() -> None:
    bad = [
        where(i) for i in OURS
        if i.importer in CORE and layer(i.imported) > 1
    ]
    assert not bad, "\n".join(bad)


def test_exporters_depend_on_events_interface_and_settings_only() -> None:
    bad = []
    for i in OURS:
        if not i.importer.startswith("swayscope.instrumentation.exporters"):
            continue
        if i.importer == "swayscope.instrumentation.exporters.factory":
            allowed = i.imported.startswith("swayscope.instrumentation.exporters")
        else:
            own = ".".join(i.importer.split(".")[:4])  # e.g. ...exporters.otel (a package)
            allowed = i.imported.startswith(own) or i.imported == (
                "swayscope.instrumentation.exporters"
            )
        if not (allowed or i.imported in EXPORTER_DEPS):
            bad.append(where(i))
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for i in OURS:
        if i.imported != i.importer:
            graph.setdefault(i.importer, set()).add(i.imported)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # A package's __init__ importing its own submodules is how packages work.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


WRAPPERS = (
    "swayscope.instrumentation.exporters.otel",
    "swayscope.instrumentation.exporters.prometheus",
    "swayscope.backends.hf",
    "swayscope.backends.ray",
    "swayscope.backends.tiny",
)


def test_heavy_libraries_only_at_module_level_where_they_are_wrapped() -> None:
    bad = [
        where(i) for i in IMPORTS
        if i.module_level
        and i.imported.split(".")[0] in HEAVY
        and not i.importer.startswith(WRAPPERS)
    ]
    assert not bad, "\n".join(bad)


def test_function_level_imports_are_for_heavy_or_optional_modules_only() -> None:
    """A function-level import of a light swayscope module would only hide a cycle."""
    light = [
        where(i) for i in OURS
        if not i.module_level
        and not i.imported.startswith(WRAPPERS)
        and layer(i.imported) < layer(i.importer)
        # The CLI defers work to keep --help fast; the dlm-sway hook runs at every start of an
        # opted-in Python and loads the shim only when dlm-sway imports its instrumentation.
        and layer(i.importer) != layer("swayscope.cli")
        and i.importer != "swayscope.integrations.dlm_sway.hook"
    ]
    assert not light, "\n".join(light)


@pytest.mark.parametrize(
    "module",
    ["swayscope.instrumentation", "swayscope.cli", "swayscope.suite.runner",
     "swayscope.instrumentation.exporters.factory",
     "swayscope.integrations.dlm_sway.suite_format", "swayscope.integrations.dlm_sway.shim",
     "swayscope.integrations.dlm_sway.observe", "swayscope.integrations.dlm_sway.launcher"],
)
def test_light_modules_import_no_heavy_library(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(HEAVY)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_dlm_sway_hook_imports_only_the_standard_library() -> None:
    """It runs at every start of an opted-in Python: the standard library and, of swayscope,
    only the package, its errors and the hook's own modules."""
    code = (
        "import sys; before = set(sys.modules)\n"
        "import swayscope.integrations.dlm_sway.hook\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'swayscope'}))\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('swayscope.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == str(sorted([
        "swayscope.errors", "swayscope.integrations", "swayscope.integrations.dlm_sway",
        "swayscope.integrations.dlm_sway.environment", "swayscope.integrations.dlm_sway.hook",
    ]))
