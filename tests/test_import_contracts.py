"""The layering contract, enforced: imports point down, the core knows no exporter, no cycles.

Every import in ``src/swayscope`` is read from the AST, module-level and function-level
alike (a function-level import must not hide what a module-level one would break):
``import``, ``from … import``, and calls of ``importlib.import_module`` and ``__import__``
(under any name they are bound to) with a constant module name. Only the body of
``if TYPE_CHECKING:`` (typing's own, as the bare name or ``typing.TYPE_CHECKING``) is
exempt: it never runs. An import the contract cannot read (a module named at run time, an
import function passed around or fetched with ``getattr``) is refused.

The checker runs on any source tree (:func:`scan`); the bypass tests plant each way around
it in a copy of ``src`` and show the contract catches it.
"""

from __future__ import annotations

import ast
import shutil
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
    "swayscope.instrumentation.flights",
    "swayscope.instrumentation.codec",
    "swayscope.instrumentation.disk_cache",
    "swayscope.instrumentation.tracing",
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
    "swayscope.instrumentation.tracing",
    "swayscope.instrumentation.exporter",
    "swayscope.instrumentation.settings",
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    module_level: bool
    """Whether it runs when the module is imported (not inside a function or lambda)."""


@dataclass(frozen=True)
class Scan:
    """What one source tree imports: every import the contract checks, and the imports it
    cannot check (a module named at run time), which it refuses."""

    imports: list[Import]
    unchecked: list[str]

    @property
    def ours(self) -> list[Import]:
        return [i for i in self.imports if i.imported.split(".")[0] == "swayscope"]


#: Functions that import the module a string names (``importlib.import_module``, the
#: builtin ``__import__``): called with a constant, checked like an ``import``.
IMPORT_FUNCTIONS = {"import_module", "__import__"}


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    as_path = root / Path(*name.split("."))
    return as_path.with_suffix(".py").exists() or as_path.is_dir()


def _absolute(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    pkg = importer.split(".") if is_package else importer.split(".")[:-1]
    pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join(pkg + ([module] if module else []))


def _from_targets(base: str, names: list[str], root: Path) -> list[str]:
    """`from pkg import name` depends on ``pkg.name`` when that is a module, else on ``pkg``."""
    return [f"{base}.{n}" if _is_module(f"{base}.{n}", root) else base for n in names]


def _bound_names(node: ast.AST) -> list[str]:
    """The names ``node`` binds (imports, assignments, definitions, arguments)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        return [node.id]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.arg):
        return [node.arg]
    return []


def _typing_import(node: ast.AST) -> bool:
    """``from typing import TYPE_CHECKING`` (no alias)."""
    return (
        isinstance(node, ast.ImportFrom) and node.module == "typing" and node.level == 0
        and any(a.name == "TYPE_CHECKING" and a.asname is None for a in node.names)
    )


def _typing_module_import(node: ast.AST) -> bool:
    """``import typing`` (no alias)."""
    return isinstance(node, ast.Import) and any(
        a.name == "typing" and a.asname is None for a in node.names
    )


class _Scanner(ast.NodeVisitor):
    """The imports of one module, in two passes: how names are bound, then every import with
    whether it runs at import time and whether it sits under typing's ``TYPE_CHECKING``."""

    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.name = module_name(path, root)
        self.is_package = path.name == "__init__.py"
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.imports: list[Import] = []
        self.unchecked: list[str] = []
        self._depth = 0  # functions and lambdas around the node being visited
        self._exempt = 0  # `if TYPE_CHECKING:` bodies around it
        self._called: set[int] = set()
        # Names the import functions go by in this module (`import importlib as il`,
        # `from importlib import import_module as load`), and whether TYPE_CHECKING and
        # typing are typing's own (bound by nothing else).
        self.importlib_names = {"importlib"}
        self.function_names = {"__import__"}
        own = {"TYPE_CHECKING": _typing_import, "typing": _typing_module_import}
        self.typing_own = dict.fromkeys(own, False)
        spoiled: set[str] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self.importlib_names |= {
                    a.asname for a in node.names if a.name == "importlib" and a.asname
                }
            elif isinstance(node, ast.ImportFrom) and node.module in ("importlib", "builtins"):
                self.function_names |= {
                    a.asname or a.name for a in node.names if a.name in IMPORT_FUNCTIONS
                }
            for bound in _bound_names(node):
                if bound in own:
                    if own[bound](node):
                        self.typing_own[bound] = True
                    else:
                        spoiled.add(bound)
        for name in spoiled:
            self.typing_own[name] = False

    def type_checking(self, test: ast.expr) -> bool:
        """Whether ``test`` is typing's ``TYPE_CHECKING`` itself (the bare name or
        ``typing.TYPE_CHECKING``); ``not TYPE_CHECKING``, ``TYPE_CHECKING or x``, a home-made
        ``TYPE_CHECKING = True`` … are not."""
        if isinstance(test, ast.Name):
            return test.id == "TYPE_CHECKING" and self.typing_own["TYPE_CHECKING"]
        return (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            and isinstance(test.value, ast.Name) and test.value.id == "typing"
            and self.typing_own["typing"]
        )

    def add(self, node: ast.AST, targets: list[str]) -> None:
        line = getattr(node, "lineno", 0)
        for target in targets:
            self.imports.append(Import(self.name, target, line, self._depth == 0))

    def refuse(self, node: ast.AST, why: str) -> None:
        self.unchecked.append(f"{self.name}:{getattr(node, 'lineno', 0)} {why}: "
                              f"{ast.unparse(node)}")

    def is_import_function(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.function_names
        return (
            isinstance(node, ast.Attribute) and node.attr in IMPORT_FUNCTIONS
            and isinstance(node.value, ast.Name)
            and node.value.id in self.importlib_names | {"builtins"}
        )

    # -- the visit ---------------------------------------------------------------------------

    def generic_visit(self, node: ast.AST) -> None:
        if (
            not self._exempt and id(node) not in self._called
            and isinstance(node, ast.Name | ast.Attribute) and self.is_import_function(node)
        ):
            self.refuse(node, "passes an import function on (call it with a constant)")
        super().generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not self.type_checking(node.test):
            self.generic_visit(node)
            return
        self._exempt += 1  # only the body is for the type checker; its else runs
        for stmt in node.body:
            self.visit(stmt)
        self._exempt -= 1
        for stmt in node.orelse:
            self.visit(stmt)

    def _deferred(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._deferred(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._deferred(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._deferred(node)

    def visit_Import(self, node: ast.Import) -> None:
        if not self._exempt:
            self.add(node, [a.name for a in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if not self._exempt:
            base = _absolute(self.name, self.is_package, node.level, node.module)
            self.add(node, _from_targets(base, [a.name for a in node.names], self.root))

    def visit_Call(self, node: ast.Call) -> None:
        if not self._exempt:
            if self.is_import_function(node.func):
                self._called.add(id(node.func))
                self.call(node)
            elif (
                isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in IMPORT_FUNCTIONS
            ):
                self.refuse(node, "reaches an import function by name")
        self.generic_visit(node)

    def call(self, node: ast.Call) -> None:
        """``import_module(name, package)`` / ``__import__(name, globals, locals, fromlist,
        level)`` with constants: the modules they import; anything else is refused."""
        args = {k.arg: k.value for k in node.keywords if k.arg}
        first = node.args[0] if node.args else args.get("name")
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            self.refuse(node, "imports a module named at run time")
            return
        name = first.value
        if name.startswith("."):
            package = node.args[1] if len(node.args) > 1 else args.get("package")
            if not (isinstance(package, ast.Constant) and isinstance(package.value, str)):
                self.refuse(node, "imports relative to a package named at run time")
                return
            level = len(name) - len(name.lstrip("."))
            name = _absolute(package.value, True, level, name.lstrip(".") or None)
        fromlist = node.args[3] if len(node.args) > 3 else args.get("fromlist")
        if fromlist is None or (isinstance(fromlist, ast.Constant) and not fromlist.value):
            self.add(node, [name])
        elif isinstance(fromlist, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in fromlist.elts
        ):
            names = [e.value for e in fromlist.elts if isinstance(e, ast.Constant)]
            self.add(node, [name, *_from_targets(name, names, self.root)])
        else:
            self.refuse(node, "imports names given at run time")


def scan(root: Path = SRC) -> Scan:
    """Every import of the ``swayscope`` package under ``root`` (a ``src`` folder)."""
    imports: list[Import] = []
    unchecked: list[str] = []
    for path in sorted((root / "swayscope").rglob("*.py")):
        module = _Scanner(root, path)
        module.visit(module.tree)
        imports += module.imports
        unchecked += module.unchecked
    return Scan(imports, unchecked)


SCAN = scan()


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


# -- the rules: each returns what breaks it in a scan -----------------------------------------


def upward_imports(scan: Scan) -> list[str]:
    return [where(i) for i in scan.ours if layer(i.imported) > layer(i.importer)]


def core_imports_above_the_core(scan: Scan) -> list[str]:
    return [where(i) for i in scan.ours if i.importer in CORE and layer(i.imported) > 1]


def exporter_imports_outside_their_deps(scan: Scan) -> list[str]:
    bad = []
    for i in scan.ours:
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
    return bad


def import_cycles(scan: Scan) -> list[str]:
    graph: dict[str, set[str]] = {}
    for i in scan.ours:
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
    return [" -> ".join(c) for c in cycles]


WRAPPERS = (
    "swayscope.instrumentation.exporters.otel",
    "swayscope.instrumentation.exporters.prometheus",
    "swayscope.backends.hf",
    "swayscope.backends.ray",
    "swayscope.backends.tiny",
)


def heavy_imports_at_module_level(scan: Scan) -> list[str]:
    return [
        where(i) for i in scan.imports
        if i.module_level
        and i.imported.split(".")[0] in HEAVY
        and not i.importer.startswith(WRAPPERS)
    ]


def light_function_level_imports(scan: Scan) -> list[str]:
    return [
        where(i) for i in scan.ours
        if not i.module_level
        and not i.imported.startswith(WRAPPERS)
        and layer(i.imported) < layer(i.importer)
        # The CLI defers work to keep --help fast; the dlm-sway hook runs at every start of an
        # opted-in Python and loads the shim only when dlm-sway imports its instrumentation.
        and layer(i.importer) != layer("swayscope.cli")
        and i.importer != "swayscope.integrations.dlm_sway.hook"
    ]


def unchecked_imports(scan: Scan) -> list[str]:
    return scan.unchecked


RULES = {
    "upward": upward_imports,
    "core": core_imports_above_the_core,
    "exporters": exporter_imports_outside_their_deps,
    "cycles": import_cycles,
    "heavy": heavy_imports_at_module_level,
    "function-level": light_function_level_imports,
    "unchecked": unchecked_imports,
}


def broken(scan: Scan) -> dict[str, list[str]]:
    """Every rule the scanned tree breaks, and how."""
    return {name: bad for name, rule in RULES.items() if (bad := rule(scan))}


# -- the contract, on src/ --------------------------------------------------------------------


def test_imports_point_down_only() -> None:
    bad = upward_imports(SCAN)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_core_imports_no_exporter() -> None:
    bad = core_imports_above_the_core(SCAN)
    assert not bad, "\n".join(bad)


def test_exporters_depend_on_events_interface_and_settings_only() -> None:
    bad = exporter_imports_outside_their_deps(SCAN)
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = import_cycles(SCAN)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_heavy_libraries_only_at_module_level_where_they_are_wrapped() -> None:
    bad = heavy_imports_at_module_level(SCAN)
    assert not bad, "\n".join(bad)


def test_function_level_imports_are_for_heavy_or_optional_modules_only() -> None:
    """A function-level import of a light swayscope module would only hide a cycle."""
    light = light_function_level_imports(SCAN)
    assert not light, "\n".join(light)


def test_every_import_names_its_module_with_a_constant() -> None:
    """An import the contract cannot read (a module named at run time) is refused."""
    bad = unchecked_imports(SCAN)
    assert not bad, "\n".join(bad)


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


# -- the ways around the contract, planted in a copy of src/ ----------------------------------

#: Where the bypasses are planted: the core, which must import nothing above it.
PLANTED_IN = Path("swayscope", "instrumentation", "core.py")
CORE_MODULE = "swayscope.instrumentation.core"


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    shutil.copytree(PACKAGE, root / "swayscope", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def planted(clean: Path, tmp_path: Path, code: str) -> Scan:
    """A scan of a copy of ``src`` with ``code`` added at the end of the core's module."""
    root = tmp_path / "src"
    shutil.copytree(clean, root)
    target = root / PLANTED_IN
    target.write_text(target.read_text(encoding="utf-8") + "\n" + code, encoding="utf-8")
    return scan(root)


#: (name, code planted at the end of core.py, the rules it must break).
BYPASSES = [
    ("if-not-type-checking",
     "from typing import TYPE_CHECKING\n\nif not TYPE_CHECKING:\n"
     "    from swayscope.cli import app\n",
     {"upward", "core"}),
    ("else-of-type-checking",
     "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    pass\n"
     "else:\n    from swayscope.cli import app\n",
     {"upward", "core"}),
    ("type-checking-or",
     "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING or app is None:\n"
     "    from swayscope.cli import app\n",
     {"upward", "core"}),
    ("home-made-type-checking",
     "TYPE_CHECKING = True\n\nif TYPE_CHECKING:\n    from swayscope.cli import app\n",
     {"upward", "core"}),
    ("importlib-import-module",
     "import importlib\n\n\ndef _app() -> object:\n"
     "    return importlib.import_module('swayscope.cli').app\n",
     {"upward", "core"}),
    ("import-module-under-another-name",
     "from importlib import import_module as _load\n\n_cli = _load('swayscope.cli')\n",
     {"upward", "core"}),
    ("importlib-under-another-name",
     "import importlib as _il\n\n_cli = _il.import_module('swayscope.cli')\n",
     {"upward", "core"}),
    ("relative-import-module",
     "import importlib\n\n_cli = importlib.import_module('..cli', 'swayscope.instrumentation')\n",
     {"upward", "core"}),
    ("dunder-import", "_cli = __import__('swayscope.cli')\n", {"upward", "core"}),
    ("dunder-import-fromlist",
     "_cli = __import__('swayscope', fromlist=['cli']).cli\n", {"upward", "core"}),
    ("module-named-at-run-time",
     "import importlib\n\n_cli = importlib.import_module('swayscope.' + 'cli')\n",
     {"unchecked"}),
    ("dunder-import-of-an-f-string",
     "_NAME = 'cli'\n_cli = __import__(f'swayscope.{_NAME}')\n", {"unchecked"}),
    ("import-function-by-getattr",
     "import importlib\n\n_cli = getattr(importlib, 'import_module')('swayscope.cli')\n",
     {"unchecked"}),
    ("import-function-passed-on",
     "import importlib\n\n_load = importlib.import_module\n_cli = _load('swayscope.cli')\n",
     {"unchecked"}),
    ("heavy-library-through-importlib",
     "import importlib\n\n_torch = importlib.import_module('torch')\n", {"heavy"}),
    ("heavy-library-in-a-module-level-try",
     "try:\n    import torch\nexcept ImportError:\n    torch = None\n", {"heavy"}),
]


def test_the_clean_copy_keeps_the_contract(clean_copy: Path) -> None:
    assert broken(scan(clean_copy)) == {}


@pytest.mark.parametrize(
    ("code", "rules"), [b[1:] for b in BYPASSES], ids=[b[0] for b in BYPASSES]
)
def test_each_bypass_breaks_the_contract(
    clean_copy: Path, tmp_path: Path, code: str, rules: set[str]
) -> None:
    found = broken(planted(clean_copy, tmp_path, code))
    assert set(found) == rules, found
    start = len((clean_copy / PLANTED_IN).read_text(encoding="utf-8").splitlines()) + 1
    for rule in rules:
        assert all(entry.startswith(f"{CORE_MODULE}:") for entry in found[rule]), found[rule]
        assert all(int(entry.split(":")[1].split()[0]) > start for entry in found[rule])
    if "core" in rules:
        assert any(" imports swayscope.cli" in e for e in found["core"]), found


@pytest.mark.parametrize(
    "code",
    [
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from swayscope.cli import app\n",
        "import typing\n\nif typing.TYPE_CHECKING:\n    from swayscope.cli import app\n",
        "import importlib\n\n"
        "_events = importlib.import_module('swayscope.instrumentation.events')\n",
    ],
    ids=["type-checking", "typing-dot-type-checking", "import-module-of-a-lower-module"],
)
def test_what_the_contract_allows_still_passes(clean_copy: Path, tmp_path: Path, code: str) -> None:
    found = planted(clean_copy, tmp_path, code)
    assert broken(found) == {}
    if "events" in code:
        assert any(
            i.importer == CORE_MODULE and i.imported == "swayscope.instrumentation.events"
            and i.line > 1 and i.module_level for i in found.imports
        )

