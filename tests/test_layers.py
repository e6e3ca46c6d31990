"""The layers, checked on rawsse's own import graph (every import statement in every
module, at any depth of the code, except those only for type checkers):

- nothing under rawsse/core, the sans-I/O core, reaches an I/O module, directly or
  through the rawsse modules it imports;
- no import cycle anywhere in rawsse/, between modules or between packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

KIND = "unit"

PACKAGE = Path(__file__).resolve().parent.parent / "rawsse"

IO_MODULES = {
    "asyncio", "socket", "select", "selectors", "fcntl", "mmap", "os", "uvloop", "subprocess",
    "multiprocessing", "threading", "signal", "ctypes", "resource", "shutil", "tempfile",
    "pathlib", "io", "logging", "importlib.resources", "urllib.request", "http.client", "ssl",
    "redis",
}  # fmt: skip
"""What the core may not import: sockets, loops, pollers, files, processes, the log."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): its body never runs."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """Every module `name` imports when it runs (rawsse's resolved to module names)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            assert isinstance(node, ast.If)
            for child in node.orelse:  # the `else:` branch is what runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level` steps up
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in MODULES:
                    found.add(candidate)
                elif base in MODULES:
                    found.add(base)  # a name defined in a rawsse module
                else:
                    # Outside rawsse the name may be a module (`from importlib import
                    # resources`) or not (`from collections import Counter`): keep both.
                    found.update((base, candidate))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def rawsse_imports(name: str) -> set[str]:
    """The rawsse modules `name` imports itself. The packages on the way to them run
    their __init__ too, but ours import nothing (checked below), so those edges are left
    out: they could only make cycles that are not there."""
    return {module for module in imports_of(name) if module in MODULES} - {name}


FILE_READERS = {"rawsse.auth.keys"}
"""The auth layer is sans-I/O too, but for the module that reads the key files."""


def test_the_core_reaches_no_io_module() -> None:
    layers = ("rawsse.core", "rawsse.auth")
    core = [name for name in MODULES if name.startswith(layers) and name not in FILE_READERS]
    assert len(core) > 10
    problems = []
    for start in core:
        seen, stack = {start}, [(start, [start])]
        while stack:
            name, path = stack.pop()
            for module in imports_of(name):
                if module in MODULES:
                    if module not in seen:
                        seen.add(module)
                        stack.append((module, [*path, module]))
                elif module in IO_MODULES or module.split(".")[0] in IO_MODULES:
                    problems.append(" -> ".join([*path, module]))
    assert not problems, "the sans-I/O core reaches I/O:\n" + "\n".join(sorted(set(problems)))


def test_no_import_cycle_in_rawsse() -> None:
    graph = {name: rawsse_imports(name) for name in MODULES}
    packages = [name for name, path in MODULES.items() if path.name == "__init__.py"]
    # What makes leaving out the edges to a module's packages sound:
    assert all(graph[package] == set() for package in packages)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of `graph` meets, as `a -> b -> a`."""
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for module in sorted(graph.get(name, ())):
            if state.get(module) == 1:
                cycles.append(" -> ".join([*path[path.index(module) :], module]))
            elif module not in state:
                walk(module, [*path, module])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    return cycles


def test_importing_the_core_loads_no_io_module() -> None:
    """The same, as the interpreter sees it: importing every core module loads none of
    the loop's or the network's modules."""
    core = sorted(name for name in MODULES if name.startswith("rawsse.core"))
    code = (
        "import sys\n"
        # PyJWT's package imports urllib for a JWKS client that rawsse never uses
        "import jwt\n"
        "before = set(sys.modules)\n"  # what the interpreter loads for itself (io, os...)
        f"for name in {core!r}: __import__(name)\n"
        f"print(','.join(sorted(m for m in {sorted(IO_MODULES)!r} if m in set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def package_of(name: str) -> str:
    """`rawsse.core.ws.frames` -> `rawsse.core`: the top-level package a module is in, or
    the module itself at the top (`rawsse.config`)."""
    parts = name.split(".")
    top = ".".join(parts[:2])
    return top if (PACKAGE.parent / top.replace(".", "/")).is_dir() else name


def test_no_import_cycle_between_packages() -> None:
    """The layers in one direction: a cycle of packages (core -> auth -> core, say) is
    one even when no single module closes it."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        edges = graph.setdefault(package_of(name), set())
        edges.update(package_of(module) for module in rawsse_imports(name))
    for package, edges in graph.items():
        edges.discard(package)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)
