"""Size limits: no module over 400 lines, no function over 60, under bgdownload/ and jupyter_ext/.

Usage: ``python scripts/limits.py [DIR ...]``. Prints one line per breach and
exits 1 when there is any, so ``./scripts/check`` fails with the list.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
DEFAULT_ROOTS = ("bgdownload", "jupyter_ext")


def breaches(path: Path) -> list[str]:
    """What in one source file is over a limit, as ``path[:line]: what`` lines."""
    source = path.read_text(encoding="utf-8")
    found: list[str] = []
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{path}: module has {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(
                    f"{path}:{node.lineno}: {node.name} has {length} lines "
                    f"(limit {MAX_FUNCTION_LINES})"
                )
    return found


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv] or [Path(root) for root in DEFAULT_ROOTS]
    paths = [path for root in roots for path in sorted(root.rglob("*.py"))]
    found = [line for path in paths for line in breaches(path)]
    for line in found:
        print(line)
    if found:
        print(f"limits: {len(found)} over the limits", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
