"""Structure gates (issue 11): no import cycle between modules, module and function sizes.

- every import between the project's modules, including those inside functions and under
  TYPE_CHECKING, forms no cycle (a package's `__init__` counts as a module of its own);
- the median module is at most 200 lines and none is over 400;
- no function or method is over 80 lines.

Exit 1 with the offenders listed, 0 otherwise.
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

import grimp

from engine_live.plan.dependencies import strongly_connected  # the compiler's Tarjan, reused

PACKAGES = ("engine_live", "ingestion", "stream_hub", "snapshot_writer", "compat_api")
ROOT = Path(__file__).resolve().parent.parent
MEDIAN_MAX, MODULE_MAX, FUNCTION_MAX = 200, 400, 80


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other (directly or around a loop)."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    return [sorted(group) for group in strongly_connected(modules, edges) if len(group) > 1]


def sizes() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    modules: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(ROOT).as_posix()
            if path.name != "__init__.py" or text.count("\n") > 5:
                modules.append((text.count("\n"), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > FUNCTION_MAX:
                        functions.append((length, f"{rel}:{node.lineno} {node.name}"))
    return modules, functions


def main() -> int:
    failed = False
    for cycle in import_cycles():
        print("import cycle:", " <-> ".join(cycle))
        failed = True
    modules, functions = sizes()
    median = statistics.median(n for n, _ in modules)
    print(f"{len(modules)} modules, median {median:.0f} lines (max {MEDIAN_MAX}), largest {max(modules)[0]}")
    if median > MEDIAN_MAX:
        failed = True
    for n, rel in sorted(modules, reverse=True):
        if n > MODULE_MAX:
            print(f"module over {MODULE_MAX} lines: {rel} ({n})")
            failed = True
    for n, where in sorted(functions, reverse=True):
        print(f"function over {FUNCTION_MAX} lines: {where} ({n})")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
