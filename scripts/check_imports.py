#!/usr/bin/env python3
"""Fail on an import cycle among a package's modules, or on an unexplained import inside a function.

    python scripts/check_imports.py              # checks django_tq/ (next to scripts/)
    python scripts/check_imports.py path/to/pkg  # checks another package directory
    python scripts/check_imports.py --list       # also lists the allowed imports inside functions

It reads every module with ``ast`` (nothing is imported) and draws an edge for each import of one
of the package's modules, at module level or inside a function; imports under
``if TYPE_CHECKING:`` are left out (they never run). Edges follow what Python executes:

* ``import a.b.c`` and ``from a.b.c import name`` depend on ``a.b.c``;
* ``from a.b import name`` depends on ``a.b`` (``name`` is read from its namespace), and also on
  ``a.b.name`` when that is a module;
* importing ``a.b.c`` from outside the package ``a.b`` runs ``a/b/__init__.py`` first, so it also
  depends on ``a.b``.

Any cycle in that graph fails the check, named module by module with the lines that import.

An import of one of the package's modules inside a function fails too, unless the import (or a
comment line right above it) carries ``# import-inside: <reason>``, where the reason begins with
``app loading`` (the models or the admin cannot be imported before Django's apps are loaded) or
``optional extra`` (a module that needs an extra that may not be installed). ARCHITECTURE.md says
how the core reaches upward without them.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"#\s*import-inside:\s*(?P<reason>\S.*)$")
#: what an ``# import-inside:`` reason must begin with
REASONS = ("app loading", "optional extra")


@dataclass(frozen=True, kw_only=True)
class Import:
    """One import statement of one of the package's modules."""

    source: str  #: the importing module
    targets: tuple[str, ...]  #: the modules it depends on
    path: Path
    line: int
    in_function: bool
    reason: str | None  #: the ``# import-inside:`` reason on its lines, if any


def find_modules(package: Path) -> dict[str, Path]:
    """Return ``dotted name -> file`` for every module of the package directory ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, modules: dict[str, Path], lines: list[str]) -> None:
        self.module = module
        self.path = path
        self.modules = modules
        self.lines = lines
        self.is_package = path.name == "__init__.py"
        self.depth = 0  # how many functions enclose the node
        self.imports: list[Import] = []

    # -- scopes ---------------------------------------------------------------------------------
    def _in_function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _in_function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    # -- imports --------------------------------------------------------------------------------
    def _known(self, name: str) -> str | None:
        """Return ``name`` or the longest of its parents that is one of the package's modules."""
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.module.split(".")
        if not self.is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit_Import(self, node: ast.Import) -> None:
        self._add(node, [found for alias in node.names if (found := self._known(alias.name))])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._absolute(node)
        found = self._known(module)
        if found is None:
            return
        targets = [found]
        for alias in node.names:
            if f"{module}.{alias.name}" in self.modules:
                targets.append(f"{module}.{alias.name}")
        self._add(node, targets)

    def _add(self, node: ast.Import | ast.ImportFrom, targets: list[str]) -> None:
        if not targets:
            return
        depends = []
        for target in targets:
            depends.append(target)
            parent = target.rpartition(".")[0]
            while parent:  # a parent package's __init__ runs first, unless it encloses us
                if not (self.module == parent or self.module.startswith(parent + ".")):
                    depends.append(parent)
                parent = parent.rpartition(".")[0]
        # the marker is on one of the statement's lines, or on a comment line right above it
        first = node.lineno - 1
        above = self.lines[first - 1].strip() if first > 0 else ""
        text = "\n".join(self.lines[first : (node.end_lineno or node.lineno)])
        marker = MARKER.search(text) or (MARKER.search(above) if above.startswith("#") else None)
        self.imports.append(
            Import(
                source=self.module,
                targets=tuple(dict.fromkeys(t for t in depends if t != self.module)),
                path=self.path,
                line=node.lineno,
                in_function=self.depth > 0,
                reason=marker.group("reason").strip() if marker else None,
            )
        )


def collect(package: Path) -> tuple[dict[str, Path], list[Import]]:
    """Return the package's modules and every import of one of them."""
    modules = find_modules(package)
    imports: list[Import] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        collector = _Collector(name, path, modules, source.splitlines())
        collector.visit(ast.parse(source, filename=str(path)))
        imports.extend(collector.imports)
    return modules, imports


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the groups of two or more modules that import each other (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def _cycle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """Return one cycle through the first module of ``group`` (a shortest one), as a path."""
    members = set(group)
    start = group[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return group


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    default = Path(__file__).resolve().parent.parent / "django_tq"
    parser.add_argument("package", nargs="?", type=Path, default=default)
    parser.add_argument("--list", action="store_true", help="list the allowed function imports")
    options = parser.parse_args(argv)
    package: Path = options.package.resolve()
    if not (package / "__init__.py").is_file():
        print(f"{package} is not a package directory", file=sys.stderr)
        return 2

    modules, imports = collect(package)
    root = package.parent
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], Import] = {}
    for found in imports:
        graph[found.source].update(found.targets)
        for target in found.targets:
            where.setdefault((found.source, target), found)
    for name in modules:
        graph.setdefault(name, set())

    failed = False
    for group in strongly_connected(graph):
        failed = True
        print(f"import cycle among {len(group)} modules: {', '.join(group)}")
        cycle = _cycle_in(group, graph)
        for source, target in itertools.pairwise(cycle):
            edge = where[(source, target)]
            print(f"  {source} -> {target}  ({edge.path.relative_to(root)}:{edge.line})")

    inside = [found for found in imports if found.in_function]
    for found in inside:
        if found.reason is not None and found.reason.startswith(REASONS):
            continue
        failed = True
        how = "without '# import-inside: <reason>'"
        if found.reason is not None:
            how = f"for {found.reason!r}, which begins with none of {', '.join(REASONS)}"
        print(
            f"{found.path.relative_to(root)}:{found.line}: {found.source} imports "
            f"{max(found.targets, key=len)} inside a function {how}; import it at module level "
            "(ARCHITECTURE.md says how the core reaches upward)"
        )
    if options.list:
        for found in inside:
            if found.reason is not None:
                where_ = f"{found.path.relative_to(root)}:{found.line}"
                print(f"allowed: {where_}: {max(found.targets, key=len)} ({found.reason})")
    if failed:
        return 1
    print(
        f"no import cycle among {len(modules)} modules of {package.name}; "
        f"{len(inside)} imports inside functions, each with its reason"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
