from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from moai.scorer.data.qa import (
    extract_choice,
    extract_number,
    grade_choice,
    grade_number,
    gsm8k_gold,
    gsm8k_prompt,
    load_gsm8k,
    load_mmlu,
    mmlu_prompt,
)

QA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "qa"
MMLU_DIR = QA / "mmlu" / "test"
GSM8K = QA / "gsm8k" / "test.jsonl"

# (reply, the choice it states: 0-3 for A-D, None when it states none)
CHOICES = [
    ("Answer: B", 1),
    ("answer: c", 2),
    ("Answer: (b)", 1),
    ("The answer is a prime number.", None),  # a lower-case 'a' elsewhere is an article
    ("B)", 1),
    ("(B)", 1),
    ("B", 1),
    ("  D.  ", 3),
    ("**C**", 2),
    ("The answer is B", 1),
    ("The correct answer is (D) 120.", 3),
    ("The answer is: A) 0", 0),
    ("**Answer:** C", 2),
    ("Answer: (A) Paris", 0),
    ("The correct option is C because the field has degree 4.", 2),
    ("B) 4\n\nThe degree of the extension is 4, since sqrt(18) = 3 sqrt(2).", 1),
    ("I think the best choice is D", 3),
    ("C is correct: the index is 24.", 2),
    ("A is the right answer.", 0),
    ("The degree is 4, so (B).", 1),
    ("Answer: B\nC) is also plausible but wrong.", 1),  # the explicit statement wins
    ("C) 2 is wrong. Answer: B", 1),  # an explicit statement wins over an earlier label
    ("B) 4. Then again, C) 2 could be it.", 1),  # the first label
    ("A) 0\nB) 4\nC) 2\nD) 6", None),  # an echo of the choices
    ("A) 0\nB) 4\nC) 2\nD) 6\nAnswer: B", 1),  # an echo, then a statement
    ("A dog is a mammal.", None),
    ("The degree of the field extension is 4.", None),
    ("Answer: Because sqrt(18) is 3 sqrt(2), the degree is 4.", None),
    ("E", None),
    ("", None),
    ("I don't know.", None),
    ("Answer: E", None),
]


@pytest.mark.parametrize(("reply", "expected"), CHOICES)
def test_extract_choice(reply: str, expected: int | None) -> None:
    assert extract_choice(reply) == expected


@pytest.mark.parametrize(
    ("reply", "gold", "right"),
    [
        ("Answer: B", 1, True),
        ("Answer: B", 2, False),  # wrong
        ("The answer is (D)", 3, True),
        ("B) 4", 0, False),  # wrong
        ("The degree is 4.", 1, False),  # unparsable is wrong
        ("A) 0\nB) 4\nC) 2\nD) 6", 0, False),  # an echo is wrong even when A is gold
    ],
)
def test_grade_choice(reply: str, gold: int, right: bool) -> None:
    assert grade_choice(reply, gold) is right


# (reply, the number it gives, None when it gives none)
NUMBERS = [
    ("Answer: 18", "18"),
    ("She makes 9 * 2 = $18 every day.\nAnswer: $18", "18"),
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\nAnswer: 18", "18"),
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18", "18"),  # no 'Answer': the last number
    ("Answer: 1,200 dollars", "1200"),
    ("The total is $1,234.50.", "1234.50"),
    ("Answer: 18.00", "18"),
    ("The answer is 70000.", "70000"),
    ("Answer: -5", "-5"),
    ("16-3=13", "13"),  # a subtraction, not a negative number
    ("Answer: 3\n\nCheck: 1 + 2 = 3, and 3 * 10 = 30", "3"),  # the number after 'Answer' wins over the last one
    ("Answer: 5 apples. Final answer: 6", "6"),  # the last 'Answer'
    ("Answer: x, which is 2 + 2 = 4", "2"),  # the first number after the last 'Answer'
    ("It takes 2 bolts of blue and 1 of white. Answer:", "1"),  # 'Answer' with no number after: the last one
    ("There are 3, 4 and 5 of them; 12 in all.", "12"),
    ("Half is .5 of it", "0.5"),
    ("I cannot solve this problem.", None),
    ("", None),
]


@pytest.mark.parametrize(("reply", "expected"), NUMBERS)
def test_extract_number(reply: str, expected: str | None) -> None:
    assert extract_number(reply) == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    ("reply", "gold", "right"),
    [
        ("Answer: 18", "18", True),
        ("Answer: 18.0", 18, True),
        ("Answer: $1,200", "1,200", True),
        ("Answer: 17", "18", False),  # wrong
        ("9 * 2 = 18. So she makes 18 dollars, minus 2 = 16", "18", False),  # the last number is wrong
        ("I am not sure.", "18", False),  # unparsable
        ("Answer: 0.5", "0.50", True),
    ],
)
def test_grade_number(reply: str, gold: str | int, right: bool) -> None:
    assert grade_number(reply, gold) is right


def test_grade_number_rejects_a_gold_that_is_no_number() -> None:
    with pytest.raises(ValueError, match="not a number"):
        grade_number("Answer: 1", "many")


def test_gsm8k_gold_is_the_number_after_the_marks() -> None:
    assert gsm8k_gold("9 * 2 = <<9*2=18>>18 dollars.\n#### 1,018") == "1018"
    with pytest.raises(ValueError):
        gsm8k_gold("no final line")


def test_prompts_letter_the_choices_and_say_how_to_answer() -> None:
    row = {"question": "2 + 2 = ?", "choice0": "3", "choice1": "4", "choice2": "5", "choice3": "22", "answer": 1}
    prompt = mmlu_prompt(row)
    assert "A) 3\nB) 4\nC) 5\nD) 22" in prompt
    assert "Answer: <letter>" in prompt
    assert mmlu_prompt({"question": "2 + 2 = ?", "choices": ["3", "4", "5", "22"]}) == prompt
    assert gsm8k_prompt({"question": "How many?"}).startswith("How many?")
    assert "Answer: <number>" in gsm8k_prompt({"question": "How many?"})


def test_loaders_read_small_files_with_and_without_a_header(tmp_path: Path) -> None:
    (tmp_path / "algebra_test.csv").write_text(
        'question,choice0,choice1,choice2,choice3,answer\n"1+1, in Z/2?",0,1,2,3,0\nq2,a,b,c,d,3\n'
    )
    (tmp_path / "biology_test.csv").write_text("q3,a,b,c,d,B\n")
    rows = load_mmlu(tmp_path, 3, seed=1)
    assert sorted(r["id"] for r in rows) == ["mmlu-algebra-0", "mmlu-algebra-1", "mmlu-biology-0"]
    assert {r["subject"] for r in rows[:2]} == {"algebra", "biology"}  # one per subject before a second
    assert next(r for r in rows if r["id"] == "mmlu-biology-0")["answer"] == 1
    assert next(r for r in rows if r["id"] == "mmlu-algebra-0")["question"] == "1+1, in Z/2?"
    assert len(load_mmlu(tmp_path, 10, seed=1)) == 3  # at most all of them
    lines = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(5)]
    (tmp_path / "gsm.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    problems = load_gsm8k(tmp_path / "gsm.jsonl", 3, seed=1)
    assert [p["gold"] for p in problems] == [p["id"].removeprefix("gsm8k-") for p in problems]
    assert len(problems) == 3
    with pytest.raises(ValueError):
        load_gsm8k(tmp_path / "gsm.jsonl", -1, seed=1)


@pytest.mark.skipif(not MMLU_DIR.is_dir(), reason=f"the shared MMLU data is not at {MMLU_DIR}")
def test_load_mmlu_is_deterministic_and_spread_across_subjects() -> None:
    first = load_mmlu(MMLU_DIR, 40, seed=0)
    assert first == load_mmlu(MMLU_DIR, 40, seed=0)
    assert first != load_mmlu(MMLU_DIR, 40, seed=1)
    assert len(first) == 40 and len({r["subject"] for r in first}) == 40
    assert load_mmlu(MMLU_DIR, 10, seed=0) == first[:10]  # a smaller n is a prefix: the same first questions
    assert all(r["answer"] in range(4) and r["question"] for r in first)
    assert load_mmlu(MMLU_DIR.parent, 5, seed=0) == first[:5]  # the parent of test/ works too


@pytest.mark.skipif(not GSM8K.is_file(), reason=f"the shared GSM8K data is not at {GSM8K}")
def test_load_gsm8k_is_deterministic() -> None:
    first = load_gsm8k(GSM8K, 40, seed=0)
    assert first == load_gsm8k(GSM8K, 40, seed=0)
    assert first != load_gsm8k(GSM8K, 40, seed=1)
    assert len({p["id"] for p in first}) == 40
    assert load_gsm8k(GSM8K, 10, seed=0) == first[:10]
    assert all(grade_number(f"Answer: {p['gold']}", p["gold"]) for p in first)
    assert all(grade_number(p["answer"].split("####")[-1], p["gold"]) for p in first)
