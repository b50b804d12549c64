"""Fail when modules of bge_export import each other in a cycle, counting every import.

Counted: every `import` and `from ... import` statement anywhere in a module (module level, inside functions
and classes, under `if TYPE_CHECKING:`, in `try:` blocks), relative imports resolved against the importing
module. `from pkg import name` counts as importing `pkg.name` when that is a module, otherwise `pkg` itself, so
a package `__init__.py` that imports its submodules and a submodule that does `from pkg import x` form a cycle.
The parent packages Python executes on the way to a module (`bge_export/__init__.py` for every import) are not
edges: only what a statement names.

Not counted: imports made through `importlib.import_module("...")`, as the registry does to reach the target
packages by name. Those are dynamic by design (the registry's rows are strings), and the layer contracts in
pyproject.toml ([tool.importlinter]) keep the static imports honest.

A cycle is a strongly connected component of more than one module, or a module that imports itself (e.g. an
`__init__.py` doing `from bge_export import x`). Each is printed with the import lines that make it.

    python tools/import_cycles.py            # exit 1 and list the cycles, exit 0 when there are none
    python tools/import_cycles.py --stats    # also count in-package imports made inside functions
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "bge_export"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of the package
    path: Path
    line: int
    in_function: bool

    def describe(self, root: Path = ROOT) -> str:
        text = self.path.read_text(encoding="utf-8").splitlines()[self.line - 1].strip()
        return f"{self.path.relative_to(root)}:{self.line}: {text}"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (packages named by their __init__.py)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _function_lines(tree: ast.AST) -> set[int]:
    """Line numbers of import statements that sit inside a function or method body."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    lines.add(inner.lineno)
    return lines


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str = PACKAGE) -> list[Import]:
    """Every import statement of `module` that names a module of the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_function = _function_lines(tree)
    is_package = path.name == "__init__.py"
    found = []

    def add(target: str, node: ast.stmt) -> None:
        # the deepest module of the package that the dotted name reaches ("pkg.mod.Class" -> "pkg.mod")
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target:
            found.append(Import(module, target, path, node.lineno, node.lineno in in_function))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else node.module or "")
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from pkg import name` imports pkg
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of the graph, each a sorted list of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def find_cycles(imports: list[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each cycle: its modules and the import statements between them."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    cycles = []
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        edges = [e for e in imports if e.source in members and e.target in members]
        cycles.append((component, sorted(edges, key=lambda e: (str(e.path), e.line))))
    return sorted(cycles)


def package_imports(package_dir: Path) -> tuple[dict[str, Path], list[Import]]:
    """The package's modules and its import edges, one per statement and imported module."""
    modules = module_files(package_dir)
    edges = [edge for module, path in modules.items() for edge in imports_of(module, path, modules, package_dir.name)]
    return modules, list(dict.fromkeys(edges))  # `from m import a, b` is one edge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", action="store_true", help="also count in-package imports inside functions")
    args = parser.parse_args(argv)
    modules, imports = package_imports(ROOT / PACKAGE)
    if args.stats:
        statements = {(e.path, e.line): e.in_function for e in imports}
        inside = sum(statements.values())
        print(f"{len(statements)} in-package import statements in {len(modules)} modules; {inside} inside functions")
    cycles = find_cycles(imports)
    for number, (component, edges) in enumerate(cycles, 1):
        print(f"cycle {number}: {' <-> '.join(component)}")
        for edge in edges:
            print(f"    {edge.describe()}")
    if cycles:
        print(f"{len(cycles)} import cycle(s) in {PACKAGE}: move the shared code to a lower layer (pyproject.toml "
              "[tool.importlinter]), not the import into a function")
        return 1
    print(f"no import cycles in {PACKAGE} ({len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
