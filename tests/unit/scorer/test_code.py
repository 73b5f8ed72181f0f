"""The code judge: which queries ask for code, which code an answer gives, and the score it gets."""

from __future__ import annotations

import asyncio
import json

import pytest

from moai.scorer.code import (
    MAX_TESTS,
    asks_for_code,
    code_score,
    query_tests,
    read_code,
    static_code_score,
    unwrap,
    wanted_function,
)

# MBPP's own form: the task, then the tests the code should pass.
MBPP = (
    "Write a function to find the shared elements from the given two lists.\n"
    "Your code should pass these tests:\n\n"
    "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"
    "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))\n"
    "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))\n"
)
RIGHT = "Sure:\n```python\ndef similar_elements(a, b):\n    return tuple(set(a) & set(b))\n```\nDone."
# Passes one test of three, by answering one case's result.
ONE_CASE = "```python\ndef similar_elements(a, b):\n    return (13, 14)\n```"


@pytest.mark.parametrize(
    ("query", "asks"),
    [
        ("Write a function to reverse a list.", True),
        ("Write a python function to find the first repeated character in a given string.", True),
        ("Implement a recursive function that sums a list.", True),
        ("Write a Python program to print the primes below 100.", True),
        ("Complete this:\n```python\ndef add(a, b):\n    ...\n```", True),
        ("assert add(1, 2) == 3", True),
        ("Explain what this prints:\n```python\nprint(1 + 1)\n```", False),
        ("Write a poem about functions.", False),
        ("Which is a gas?\nA) iron\nB) oxygen", False),
        ("How many apples are left?", False),
    ],
)
def test_a_query_asks_for_code_when_it_says_so(query: str, asks: bool) -> None:
    assert asks_for_code(query) is asks


def test_the_tests_are_the_asserts_the_query_states_that_parse() -> None:
    query = MBPP + "assert broken(\n  assert   x == 1\nnot an assert(1) == 1\nassert f(1); import os\n"
    assert query_tests(query) == [
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
        "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
        "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))",
        "assert   x == 1",
    ]
    many = "\n".join(f"assert f({i}) == {i}" for i in range(MAX_TESTS + 5))
    assert len(query_tests(many)) == MAX_TESTS
    assert query_tests("Write a function to reverse a list.") == []


def test_the_function_asked_for_is_the_one_the_tests_call_or_the_query_names() -> None:
    assert wanted_function(MBPP, query_tests(MBPP)) == "similar_elements"
    assert wanted_function("Write a function `rev(xs)` that reverses xs.", []) == "rev"
    assert wanted_function("Write a function named count_vowels(s).", []) == "count_vowels"
    assert wanted_function("Write a function to reverse a list.", []) is None


@pytest.mark.parametrize(
    ("answer", "code", "functions"),
    [
        (RIGHT, "def similar_elements(a, b):\n    return tuple(set(a) & set(b))", ("similar_elements",)),
        # the usage block does not parse, the definition does: the definition is read
        (
            "```\n>>> f(1)\n2\n```\n```python\ndef f(x):\n    return x + 1\n```",
            "def f(x):\n    return x + 1",
            ("f",),
        ),
        # Code Llama's tags
        (
            "[PYTHON]\ndef f(x):\n    return x\n[/PYTHON]\n[TESTS]\nassert f(1) == 1\n[/TESTS]",
            "def f(x):\n    return x",
            ("f",),
        ),
        # bare code, then prose: the leading code
        ("def f(x):\n    return x\n\nThis returns x unchanged.", "def f(x):\n    return x", ("f",)),
        # a reply cut off inside its block
        ("```python\ndef f(x):\n    return x", "def f(x):\n    return x", ("f",)),
        # another language is not read as Python
        ("```cpp\nint f(int x) { return x; }\n```", "", ()),
        ("I cannot write code.", "", ()),
    ],
)
def test_the_answers_code_is_its_first_block_that_defines_a_function(
    answer: str, code: str, functions: tuple[str, ...]
) -> None:
    read = read_code(answer)
    assert (read.code, read.functions, read.parses) == (code, functions, bool(code))


def test_the_block_that_defines_the_wanted_function_is_preferred() -> None:
    answer = "```python\ndef helper(x):\n    return x\n```\n```python\ndef main(x):\n    return helper(x)\n```"
    assert read_code(answer, "main").functions == ("main",)
    assert read_code(answer).functions == ("helper",)


def test_a_reply_recorded_as_a_list_of_one_string_is_unwrapped() -> None:
    recorded = json.dumps(["Here:\r\n```python\r\ndef f(x):\r\n    return x\r\n```"])
    assert unwrap(recorded).startswith("Here:\r\n```python")
    assert read_code(recorded).functions == ("f",)
    assert unwrap("['not', 1]") == "['not', 1]"  # not a list of strings: left as it is
    assert unwrap("[" + "[" * 10_000 + "]") == "[" + "[" * 10_000 + "]"


@pytest.mark.parametrize(
    ("query", "answer", "score"),
    [
        ("Write a function to reverse a list.", "```python\ndef rev(xs):\n    return xs[::-1]\n```", 1.0),
        ("Write a function to reverse a list.", "```python\nprint([1, 2][::-1])\n```", 0.5),  # no function
        ("Write a function `rev(xs)` to reverse a list.", "```python\ndef other(xs):\n    pass\n```", 0.5),
        ("Write a function to reverse a list.", "```python\ndef rev(xs) return xs\n```", 0.0),  # does not parse
        ("Write a function to reverse a list.", "Use slicing.", 0.0),
        ("What is the capital of France?", "```python\ndef f(): pass\n```", None),  # no code asked for
    ],
)
def test_without_tests_the_score_is_static(query: str, answer: str, score: float | None) -> None:
    assert static_code_score(query, answer) == score
    assert asyncio.run(code_score(query, answer)) == score


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        (RIGHT, 1.0),
        (ONE_CASE, pytest.approx(1 / 3)),
        ("```python\ndef similar_elements(a, b)\n    return a\n```", 0.0),  # does not parse: not run
        ("```python\ndef other(a, b):\n    return a\n```", 0.0),  # not the function the tests call: not run
        ("No idea.", 0.0),
    ],
)
def test_with_tests_in_the_query_the_score_is_the_share_passed(answer: str, score: float) -> None:
    assert asyncio.run(code_score(MBPP, answer)) == score


def test_a_huge_or_nested_answer_is_read_in_bounded_time() -> None:
    # Past the size bound nothing is parsed; deeply nested brackets fail to parse rather than recurse.
    assert read_code("```python\n" + "x = 1\n" * 50_000 + "```").parses is False
    assert read_code("```python\nx = " + "(" * 100_000 + "\n```").parses is False
    assert static_code_score("Write a function to f.", "def f(:\n" * 10_000) == 0.0
