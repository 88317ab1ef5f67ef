"""Structure checks that `make lint` runs: no import cycle among evalkit's modules, no function above a complexity cap.

Import cycles are found among all imports, module level and inside functions (a late import hides a cycle from the
interpreter, not from the reader); imports under ``if TYPE_CHECKING`` are annotations only and do not count.
Importing ``a.b.c`` also imports the packages ``a`` and ``a.b``, so those edges count too. Complexity is radon's
cyclomatic complexity.

    python scripts/check_structure.py [--max-complexity 25] [PACKAGE_DIR ...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

DEFAULT_MAX = 25


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Modules ``name`` imports, at module level or inside its functions (``TYPE_CHECKING`` blocks excluded): a late
    import inside a function still couples the two modules, so it counts."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit(
                            [n for n in inner if isinstance(n, ast.stmt)]
                            + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                        )

    visit(tree.body)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = {module_name(p, package_dir): (p, p.name == "__init__.py") for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        edges: set[str] = set()
        for target in imports(ast.parse(path.read_text()), name, is_package):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                candidate = ".".join(parts[:i])
                if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                    edges.add(candidate)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def complex_functions(package_dir: Path, limit: int) -> list[str]:
    from radon.complexity import cc_visit

    found = []
    for path in sorted(package_dir.rglob("*.py")):
        for block in cc_visit(path.read_text()):
            if block.complexity > limit:
                found.append(f"{path}:{block.lineno} {block.name} has complexity {block.complexity} (> {limit})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", type=Path, default=[Path("evalkit")])
    parser.add_argument("--max-complexity", type=int, default=DEFAULT_MAX)
    args = parser.parse_args(argv)
    problems: list[str] = []
    for package in args.packages:
        for component in cycles(import_graph(package)):
            problems.append("import cycle: " + " -> ".join(component))
        problems.extend(complex_functions(package, args.max_complexity))
    for line in problems:
        print(line)
    if not problems:
        print(f"structure ok: no import cycles, no function above complexity {args.max_complexity}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
