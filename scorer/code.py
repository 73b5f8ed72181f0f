"""The code judge: does an answer's code parse, define the function asked for, and pass the query's own tests.

A query that asks for code ('Write a python function to ...', a code block in the query) gets its
answer's code read: the first fenced block that defines a function (the one the query or its tests name,
when they name one), else the answer itself when it is code. Without tests in the query the score is
static: 1.0 when that code parses and defines the function, 0.5 when it parses but defines none (or
another), 0.0 when no code parses. Where the query itself states tests (`assert f(...) == ...` lines, as
MBPP's 'Your code should pass these tests:' gives them), the code is run against them in a sandboxed
subprocess (`moai.scorer.sandbox`) and the score is the share of the asserts that pass.

The reading is bounded: at most `MAX_CODE_CHARS` of code are parsed (`ast.parse`, no execution), at most
`MAX_TESTS` asserts of at most `MAX_TEST_CHARS` characters are taken from the query, every pattern is linear.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from dataclasses import dataclass

from moai.scorer.sandbox import SandboxLimits, run_asserts

__all__ = [
    "MAX_CODE_CHARS",
    "MAX_TESTS",
    "MAX_TEST_CHARS",
    "CodeAnswer",
    "asks_for_code",
    "code_score",
    "query_tests",
    "read_code",
    "static_code_score",
    "unwrap",
]

MAX_CODE_CHARS = 20_000
"""Characters of one code block that are parsed; a longer block is not read as code."""
MAX_TESTS = 20
"""Asserts of a query that are run; the first ones count."""
MAX_TEST_CHARS = 2_000
"""Characters of one assert line; a longer one is not taken as a test."""
_MAX_QUERY_CHARS = 20_000
_MAX_ANSWER_CHARS = 60_000
_MAX_BLOCKS = 20

_ASKS = re.compile(
    r"\b(?:write|implement|create|complete|fix|define)\s+(?:an?\s+|the\s+)?"
    r"(?:(?:python|recursive|python3|short|simple)\s+){0,2}(?:function|program|script|method|class|code)\b"
    r"|\bpython\s+(?:function|code|program|script)\b"
    r"|your\s+code\s+should\s+pass",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^[ \t]{0,8}```[ \t]{0,4}([\w+.-]{0,20})[^\n]{0,80}$", re.MULTILINE)
_ASSERT_LINE = re.compile(rf"^[ \t]{{0,8}}(assert\b[^\n]{{1,{MAX_TEST_CHARS}}})$", re.MULTILINE)
_NAMED = re.compile(r"\b(?:function|method)\s+(?:named|called)?\s*`?([A-Za-z_]\w{0,60})`?\s*\(")
_DEF_IN_QUERY = re.compile(r"\bdef\s+([A-Za-z_]\w{0,60})\s*\(")
_CODE_START = re.compile(r"(?:def|class|import|from|async def)\s")
_MAX_CUTS = 50
_OPEN_TAG, _CLOSE_TAG = "[PYTHON]", "[/PYTHON]"
_NOT_PYTHON = {"js", "javascript", "ts", "typescript", "java", "c", "cpp", "c++", "rust", "go", "ruby", "bash", "sh"}


@dataclass(frozen=True)
class CodeAnswer:
    """What the judge read of an answer's code.

    Attributes:
        code: The block read as the answer's code ('' when there is none).
        parses: Whether it parses as Python.
        functions: The names of the functions it defines at its top level.
    """

    code: str
    parses: bool
    functions: tuple[str, ...]


def unwrap(answer: str) -> str:
    """Return the text of an answer recorded as a Python list of one reply ("['...\\n...']"), else the answer.

    RouterBench records each reply so, with its newlines escaped; `ast.literal_eval` reads it (bounded in
    size, never a call), and anything that is not a list of strings is left as it is.
    """
    text = answer.strip()
    if len(text) > _MAX_ANSWER_CHARS or not (text[:2] in ("['", '["') and text[-2:] in ("']", '"]')):
        return answer
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return answer
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return "\n".join(value)
    return answer


def asks_for_code(query: str) -> bool:
    """Return whether a query asks for code: 'write a (python) function/program ...', asserts, a function in a block.

    Args:
        query: The user's query.
    """
    head = query[:_MAX_QUERY_CHARS]
    # A code block alone may be code to explain; one with a function in it is code to complete.
    code_block = _FENCE.search(head) is not None and _DEF_IN_QUERY.search(head) is not None
    return bool(_ASKS.search(head) or code_block or _ASSERT_LINE.search(head))


def query_tests(query: str) -> list[str]:
    """Return the assert statements a query states on their own lines (at most `MAX_TESTS`), each one that parses.

    Args:
        query: The user's query.
    """
    tests: list[str] = []
    for match in _ASSERT_LINE.finditer(query[:_MAX_QUERY_CHARS]):
        line = match[1].strip()
        try:
            tree = ast.parse(line)
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
            tests.append(line)
        if len(tests) >= MAX_TESTS:
            break
    return tests


def wanted_function(query: str, tests: list[str]) -> str | None:
    """Return the name of the function the query's tests call first, or the one the query names, or None."""
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in _BUILTINS:
                return node.func.id
    head = query[:_MAX_QUERY_CHARS]
    named = _DEF_IN_QUERY.search(head) or _NAMED.search(head)
    return named[1] if named else None


def _blocks(answer: str) -> list[str]:
    """Return the code blocks of an answer: fenced ones not marked as another language (an unclosed last one
    too), or else those between [PYTHON] and [/PYTHON] tags (Code Llama's)."""
    fences = list(_FENCE.finditer(answer))
    blocks: list[str] = []
    i = 0
    while i < len(fences) and len(blocks) < _MAX_BLOCKS:
        language = fences[i][1].lower()
        end = fences[i + 1].start() if i + 1 < len(fences) else len(answer)
        if language not in _NOT_PYTHON:
            blocks.append(answer[fences[i].end() + 1 : end])
        i += 2
    start = 0
    while not fences and len(blocks) < _MAX_BLOCKS and (opening := answer.find(_OPEN_TAG, start)) >= 0:
        closing = answer.find(_CLOSE_TAG, opening)
        end = closing if closing >= 0 else len(answer)
        blocks.append(answer[opening + len(_OPEN_TAG) : end])
        start = end + len(_CLOSE_TAG)
    return blocks


def _unfenced(text: str) -> Iterator[str]:
    """Yield the answer itself, then (only if asked for: it parses up to `_MAX_CUTS` times) its leading code."""
    yield text
    yield _leading_code(text)


def _leading_code(text: str) -> str:
    """Return the longest run of lines, from the first top-level def/class/import, that parses (prose after it
    cut off); only cuts before a top-level line are tried, at most `_MAX_CUTS` of them."""
    lines = text[:MAX_CODE_CHARS].split("\n")
    first = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if first is None:
        return ""
    cuts = [i for i in range(first + 1, len(lines)) if lines[i][:1] not in ("", " ", "\t")][:_MAX_CUTS]
    for cut in reversed([*cuts, len(lines)]):
        code = "\n".join(lines[first:cut])
        if _parse(code) is not None:
            return code
    return ""


def _parse(code: str) -> ast.Module | None:
    if not code.strip() or len(code) > MAX_CODE_CHARS:
        return None
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _functions(tree: ast.Module) -> tuple[str, ...]:
    return tuple(node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def read_code(answer: str, wanted: str | None = None) -> CodeAnswer:
    """Return the answer's code: the first block that defines `wanted` (or, unnamed, any function).

    Blocks are the answer's fenced (or [PYTHON]-tagged) ones; an answer with none is read whole, then by its
    leading code. Failing a definition, the first block that parses (one with functions first) is returned.

    Args:
        answer: A model's answer.
        wanted: The function the query asks for, when it names one.
    """
    text = unwrap(answer).replace("\r\n", "\n")
    blocks = _blocks(text)
    first: CodeAnswer | None = None
    for block in blocks or _unfenced(text):
        code = block.strip("\n")
        tree = _parse(code)
        if tree is None:
            continue
        read = CodeAnswer(code, True, _functions(tree))
        if read.functions and (wanted is None or wanted in read.functions):
            return read
        if first is None or (read.functions and not first.functions):
            first = read
    return first or CodeAnswer("", False, ())


def static_code_score(query: str, answer: str) -> float | None:
    """Return the code judge's score without running anything (see the module's docstring); None if no code is asked.

    Args:
        query: The user's query.
        answer: A model's answer.
    """
    if not asks_for_code(query):
        return None
    wanted = wanted_function(query, query_tests(query))
    return _static(read_code(answer, wanted), wanted)


def _static(read: CodeAnswer, wanted: str | None) -> float:
    if not read.parses:
        return 0.0
    return 1.0 if read.functions and (wanted is None or wanted in read.functions) else 0.5


async def code_score(query: str, answer: str, limits: SandboxLimits | None = None) -> float | None:
    """Return the code judge's score of an answer: None unless the query asks for code.

    With tests in the query, the share of them that the answer's code passes, run in the sandbox (0.0 when
    the code does not parse or does not define the function the tests call; None when no sandbox can be
    started here); without tests, the static score.

    Args:
        query: The user's query.
        answer: A model's answer.
        limits: The sandbox's limits; None: the defaults.
    """
    if not asks_for_code(query):
        return None
    tests = query_tests(query)
    wanted = wanted_function(query, tests)
    read = read_code(answer, wanted)
    static = _static(read, wanted)
    if not tests:
        return static
    if static < 1.0:
        return 0.0
    passed = await run_asserts(read.code, tests, limits)
    return None if passed is None else passed / len(tests)


_BUILTINS = frozenset(dir(builtins))
"""Names a test may call that are not the function under test."""
