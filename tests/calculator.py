"""A real Python tool for the agent-loop tests: arithmetic parsed with `ast`, never `eval`ed."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool

__all__ = ["SPEC", "calculate", "calculator"]

_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / and parentheses."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))  # type: ignore[no-any-return]
        raise ValueError(f"not arithmetic: {ast.dump(node)[:60]}")

    return str(value(ast.parse(expression, mode="eval").body))


calculator = StructuredTool.from_function(calculate, name="calculator")
"""`calculate` as the LangChain tool named `calculator`."""
SPEC = convert_to_openai_tool(calculator)
"""The same tool as an OpenAI client sends it (`tools=[SPEC]`): name, description, JSON schema of its arguments."""
