"""A function whose code is longer than a screen and a half says why in its docstring.

Ruff's PLR0915 counts statements, not lines; this counts the lines of code below the docstring
(the docstring's Args and Returns do not make a function harder to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

MAX_LINES = 60
REASON = "Long on purpose:"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the ``def`` to the end, without the docstring's."""
    lines = (node.end_lineno or node.lineno) - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= (first.end_lineno or first.lineno) - first.lineno + 1
    return lines


def long_functions_without_a_reason(root: Path) -> list[str]:
    """``path:line name (N lines)`` of each function with over MAX_LINES lines of code and no ``Long on purpose:``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = _code_lines(node)
                if lines > MAX_LINES and REASON not in (ast.get_docstring(node) or ""):
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_every_long_function_says_why() -> None:
    assert long_functions_without_a_reason(REPO / "src") == []


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (package / "m.py").write_text(f'def short():\n    """Short."""\n\n\ndef long():\n    """No reason."""\n{body}\n')
    assert long_functions_without_a_reason(package) == [f"pkg/m.py:5 long ({MAX_LINES + 1} lines)"]
    (package / "m.py").write_text(f'def long():\n    """{REASON} a test."""\n{body}\n')
    assert long_functions_without_a_reason(package) == []
