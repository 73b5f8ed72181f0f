"""The answer-reading judges: agreement, form and arithmetic, on plain and hostile answers."""

from __future__ import annotations

import tracemalloc

import pytest

from moai.scorer.answers import (
    MAX_DEPTH,
    MAX_EQUATIONS,
    agreement,
    annotation_score,
    arithmetic_score,
    form_score,
    normalise,
    query_form,
    read_scores,
)

MCQ = "Which is a gas?\nA) iron\nB) oxygen\nC) wood\nD) salt\nAnswer:"
MATH = "Tom had 7 apples and ate 3. How many apples are left?"


@pytest.mark.parametrize(
    ("query", "form"),
    [
        (MCQ, "choice"),
        ('Pick one.\nPrint only a single choice from "A" or "B" without explanation.', "choice"),
        (MATH, "number"),
        ("Solve it. End with a last line 'Answer: <number>' (the number only).", "number"),
        ("Write a function to reverse a list.", None),
    ],
)
def test_the_query_says_which_form_of_answer_it_asks_for(query: str, form: str | None) -> None:
    assert query_form(query) == form


@pytest.mark.parametrize(
    ("answer", "form", "key"),
    [
        ("Answer: B", "choice", "B"),
        ("['C']", "choice", "C"),
        ("['D\\n']", "choice", "D"),  # a recorded list of one reply
        ("(D) salt", "choice", "D"),
        ("I am not sure.", "choice", None),
        ("so the answer is $1,200.00", "number", "1200"),
        ("#### 1200", "number", "1200"),
        ("It is 0.50", "number", "0.5"),
        ("-0", "number", "0"),
        ("no idea", "number", None),
        ("Reasoning...\n\n  The Eiffel Tower!  ", "text", "the eiffel tower"),
        ("   \n  ", "text", None),
    ],
)
def test_an_answer_is_normalised_by_its_form(answer: str, form: str, key: str | None) -> None:
    assert normalise(answer, form) == key  # type: ignore[arg-type]


def test_agreement_is_each_answers_share_of_the_others_that_agree() -> None:
    assert agreement(["Answer: 18", "so $18.00", "Answer: 17", "no number"], "number") == [
        pytest.approx(1 / 3),
        pytest.approx(1 / 3),
        0.0,
        0.0,
    ]
    assert agreement(["Answer: B", "(B)"], "choice") == [1.0, 1.0]
    assert agreement(["x", "x"], "number") == [0.0, 0.0]  # nothing readable agrees with nothing
    assert agreement(["Answer: 4"], "number") == [None]
    assert agreement([], "number") == []


def test_form_is_scored_only_where_the_query_asks_for_one() -> None:
    assert form_score(MCQ, "Answer: B") == 1.0
    assert form_score(MCQ, "Oxygen, clearly.") == 0.0
    assert form_score(MATH, "4 apples") == 1.0
    assert form_score(MATH, "four apples") == 0.0
    assert form_score("Write a haiku.", "Leaves fall") is None


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("2 / 2 = 1 bolt, and 2 + 1 = 3 bolts.", 1.0),
        ("16-3=13", 1.0),
        ("2 + 1 + 3 = 6", 1.0),  # a chain is read whole, never as '1 + 3 = 6'
        ("10 / 2 + 3 = 8", 1.0),  # multiplication and division first
        ("10 / 3 = 3.33, 10 / 3 = 3.34 and 10 / 3 = 3.35", pytest.approx(2 / 3)),  # within 10^-decimals
        ("5 * -3 = -15", 1.0),
        ("<<5/2=2.5>> and 1,200 + 300 = 1,500", 1.0),
        ("\\( 4 \\times 3 = 12 \\)", 1.0),
        ("3 \u00d7 4 = 12 and 8 \u00f7 2 = 5", 0.5),
        ("7 - 3 = 5", 0.0),
        ("5 / 0 = 3", 0.0),
        ("(2 + 3) * 4 = 20", None),  # part of a longer expression: skipped, not misread
        ("2 + 3 = 5 * 2", None),  # the right side goes on: skipped
        ("No sums here.", None),
        ("1" * 40 + " + 1 = 2", None),  # a number beyond MAX_DIGITS is skipped
    ],
)
def test_arithmetic_recomputes_each_equation(answer: str, score: float | None) -> None:
    assert arithmetic_score(answer) == score


def test_at_most_max_equations_are_recomputed() -> None:
    answer = "1 + 1 = 2. " * MAX_EQUATIONS + "1 + 1 = 3. " * 10
    assert arithmetic_score(answer) == 1.0


RISSA = (
    " Rissa initially had 5 x 3 = $<<5*3=15>>15, and she was left with 15 - (4/5 x 15) = $<<15- (4/5 * 15)=9>>9.\n"
    "So, Ronnie's share was 15 - 9 = $<<15-9=6>>6.\n"
    "Since Ronnie initially had $5, he still has $5, as he didn't give any money to their little sister.\n"
    "#### 6 (for Rissa), but Ronnie still has $5."
)


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        (RISSA, pytest.approx(2 / 3)),  # Mixtral's wrong answer: 15 - (4/5 * 15) is 3, not 9
        ("So she keeps 15 - (4/5 x 15) = $<<15- (4/5 * 15)=3>>3.\n#### 3", 1.0),
        ("<<(2 + 3) * 4=20>>20", 1.0),
        ("<<-(2 - 5) * (1 + (2 * 3))=21>>", 1.0),
        ("<<(10 / 3)=3.33>>", 1.0),  # within 10^-decimals, as a plain equation
        ("<<(2+3)*4=21>>", 0.0),
        ("<<(5)/(2-2)=1>>", 0.0),  # a division by zero counts as wrong
        ("<<(2 + 3) * 4=20>>20, then 20 + 1 = 22", 0.5),  # in the order written, each read once
        ("<<(20% of 50)=10>>", None),  # not plain arithmetic: skipped
        ("<<2(3+4)=14>>", None),  # no implicit product
        ("<<(2 ** 3)=8>>", None),  # no power
        ("<<((2+3)*4=20>>", None),  # unbalanced
        ("<<(__import__('os'))=1>>", None),
        ("<<(5)=5>>", None),  # nothing to recompute
        ("<<" + "(" * MAX_DEPTH + "1+1" + ")" * MAX_DEPTH + "=2>>", 1.0),
        ("<<" + "(" * (MAX_DEPTH + 1) + "1+1" + ")" * (MAX_DEPTH + 1) + "=2>>", None),  # nested too deep
    ],
)
def test_a_calculator_annotation_with_parentheses_is_recomputed_whole(answer: str, score: float | None) -> None:
    assert arithmetic_score(answer) == score


def test_annotation_score_reads_the_calculator_annotations_alone() -> None:
    assert annotation_score(RISSA) == pytest.approx(2 / 3)  # its prose equations are not read here
    assert annotation_score("2 + 2 = 5, and <<3*4=12>>12") == 1.0
    assert annotation_score("<<20% of 50=10>> and <<5/0=1>>") == 0.0  # skipped; a division by zero is wrong
    assert annotation_score("2 + 2 = 4") is None
    assert annotation_score("<<1+1=2>>" * 20_000 + "<<1+1=3>>") == 1.0  # the first MAX_EQUATIONS count


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("<<" + "(" * 100_000 + "1+1" + ")" * 100_000 + "=2>>", None),  # deep nesting, 2 * 10^5 characters
        (("<<" + "(" * 9 + "1+1" + ")" * 9 + "=2>>") * 5_000, None),
        ("<<(" + "9" * 100_000 + "+1)=1>>", None),  # a huge number
        ("<<(" + " * ".join(["9" * 30] * 6) + ")=1>>", 0.0),  # a product of 180 digits is still computed
        ("<<(1+1)=2>>" * 20_000, 1.0),  # 10^5 annotations: the first MAX_EQUATIONS count
        ("<<(" * 50_000, None),
    ],
)
def test_hostile_annotations_are_bounded(answer: str, score: float | None) -> None:
    assert arithmetic_score(answer) == score


HOSTILE = [
    "9" * 1_000_000,  # one huge number
    "1 + " * 250_000 + "1 = 250001",  # a long chain
    "(" * 500_000 + "1" + ")" * 500_000,  # deep nesting
    "1," * 500_000,  # endless thousands groups
    " " * 1_000_000 + "=",
    "Answer: " * 125_000,
    "A) " * 333_333,
    ("9" * 29 + " * ") * 30_000 + "1 = 1",  # big products
    "0." + "0" * 999_990 + "1 = 1",
    "<<" + "(" * 500_000 + "1+1" + ")" * 500_000 + "=2>>",  # deep nesting in an annotation
    "<<(1+(2*3))=7>>" * 60_000,
]


@pytest.mark.parametrize("answer", HOSTILE, ids=range(len(HOSTILE)))
def test_every_judge_is_bounded_on_a_hostile_megabyte(answer: str) -> None:
    tracemalloc.start()
    try:
        scores = read_scores(["agreement", "form", "arithmetic"], answer, [answer, answer[::-1], "Answer: 4"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(scores) == 3
    assert all(s is None or 0.0 <= s <= 1.0 for answer_scores in scores for s in answer_scores.values())
    assert peak < 50_000_000


def test_an_unknown_judge_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="agreement, form, arithmetic"):
        read_scores(["vibes"], "q", ["a"])
