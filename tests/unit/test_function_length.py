"""No function of the four packages runs over LIMIT lines unless its docstring says why it is
kept whole (a paragraph starting "Why one function:"): long functions are where a training loop's
step, logging and checkpointing, or a controller's pricing and planning, run together."""

from __future__ import annotations

import ast

from conftest import ROOT

LIMIT = 60
REASON = "Why one function:"


def test_no_function_is_long_without_a_reason():
    long = []
    for package in ("api", "operator", "trainer", "testbed"):
        for path in sorted((ROOT / package / "src").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > LIMIT and REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these, or say why they are one function:\n" + "\n".join(long)
