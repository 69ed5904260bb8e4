"""The shape of the source tree the design promises: few top-level modules, short functions.

(The layers and the absence of import cycles are checked by import-linter in ``make lint``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "metaunsup"

#: Longest function body (lines, docstring included) anywhere in src/.
MAX_FUNCTION_LINES = 80
#: Most ``.py`` modules directly in src/metaunsup (everything else lives in a package).
MAX_TOP_LEVEL_MODULES = 8


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over the limit: " + ", ".join(long)


def test_few_top_level_modules():
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
