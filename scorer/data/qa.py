"""Grading of real questions: prompts, answer extraction, exact-match grading, and seeded loaders.

Used by the end-to-end benchmark (`bench/mixes.py`) and, later, to build routing data (run each model on
questions, grade its answer, write one line per query and model). Two task families:

- MMLU: four-choice questions; a model answers with a letter A-D, graded against the gold index 0-3.
- GSM8K: grade-school math; a model ends with 'Answer: <number>', graded numerically against the number
  that follows '####' in the reference solution.

The loaders read the public CSV/JSONL files (see the shared data's README) and return the same sample for
the same seed on every run and every machine.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

__all__ = [
    "LETTERS",
    "Gsm8kRow",
    "MmluRow",
    "extract_choice",
    "extract_number",
    "grade_choice",
    "grade_number",
    "gsm8k_gold",
    "gsm8k_prompt",
    "load_gsm8k",
    "load_mmlu",
    "mmlu_prompt",
]

LETTERS = "ABCD"
_MMLU_COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")


class MmluRow(TypedDict):
    """One MMLU question, with the CSV's columns plus where it came from."""

    id: str
    subject: str
    question: str
    choice0: str
    choice1: str
    choice2: str
    choice3: str
    answer: int


class Gsm8kRow(TypedDict):
    """One GSM8K problem: the question, the reference solution, and its final number."""

    id: str
    question: str
    answer: str
    gold: str


# --------------------------------------------------------------------------------------------- prompts


def mmlu_prompt(row: Mapping[str, Any]) -> str:
    """Return the prompt of a multiple-choice question: the question, lettered choices, how to answer.

    Args:
        row: A mapping with `question` and `choice0`..`choice3` (an `MmluRow`), or `question` and a
            four-item `choices` list.

    Returns:
        The question, the choices as 'A) ...' to 'D) ...', and an instruction to reply 'Answer: <letter>'.
    """
    choices = list(row["choices"]) if "choices" in row else [row[f"choice{i}"] for i in range(4)]
    if len(choices) != len(LETTERS):
        raise ValueError(f"an MMLU question has {len(LETTERS)} choices, not {len(choices)}")
    lines = [str(row["question"]).strip(), ""]
    lines += [f"{letter}) {str(choice).strip()}" for letter, choice in zip(LETTERS, choices, strict=True)]
    lines += ["", "Reply with the letter of the correct choice (A, B, C or D) as 'Answer: <letter>'."]
    return "\n".join(lines)


def gsm8k_prompt(row: Mapping[str, Any]) -> str:
    """Return the prompt of a math word problem, asking for a last line 'Answer: <number>'.

    Args:
        row: A mapping with a `question` (a `Gsm8kRow`).
    """
    return (
        f"{str(row['question']).strip()}\n\n"
        "Solve the problem step by step, briefly. End with a last line 'Answer: <number>' (the number only)."
    )


# ----------------------------------------------------------------------------------- choice extraction

# Case-insensitive words around an upper-case choice letter: a lower-case 'a' is the article, never a choice.
_FILLER = r"(?:[\s*_:=\-]|(?i:is|was|would|be|should|will|correct|right|final|the|option|choice|letter)\b)*"
_MARKED = re.compile(
    # 'Answer: B', 'The answer is (B)', '**Answer:** B', 'the correct option is C', 'Choice D'
    rf"(?i:\b(?:answer|option|choice)\b){_FILLER}[(\[]?([A-D])(?![A-Za-z0-9])"
    # 'B is correct', 'C is the right answer'
    rf"|(?<![A-Za-z0-9])([A-D])\s+(?i:is|would\s+be)\s+(?i:the\s+)?(?i:correct|right|best)\b"
    # 'answer: c', 'Answer: (b)': a lower-case letter only right after 'answer:' and alone
    r"|(?i:\banswer\b)\s*:\s*[(\[]?([a-d])(?:[)\].]|[ \t]*$)",
    re.MULTILINE,
)
_LABEL = re.compile(
    # a lone letter or a label at the start of a line: 'B', 'B)', '(B)', 'B.', 'B:', '**B**', 'B - 4'
    r"^[\s*_]*[(\[]?[\s*_]*([A-D])[\s*_]*(?:[)\].:,\-\u2013]|$)"
    # '(B)' or 'B)' anywhere
    r"|\(([A-D])\)|(?<![A-Za-z0-9(])([A-D])\)",
    re.MULTILINE,
)
_LINE_LABEL = re.compile(r"^[\s*_]*[(\[]?([A-D])[)\].:]", re.MULTILINE)


def extract_choice(answer_text: str) -> int | None:
    """Return the choice (0-3) an answer states, or None when it states no clear choice.

    An explicit statement ('Answer: B', 'The answer is (B)', 'C is correct') wins; the first one counts.
    A lower-case letter counts only alone right after 'Answer:' ('answer: c'); elsewhere 'a' is an article.
    Else the first label: a lone letter, 'B)', '(B)', 'B.' at the start of a line, or '(B)'/'B)' anywhere.
    A reply that lists three or more of the choices as labels (an echo of the question) states no choice
    unless it also has an explicit statement.

    Args:
        answer_text: The model's reply.
    """
    if marked := _MARKED.search(answer_text):
        return LETTERS.index((marked[1] or marked[2] or marked[3]).upper())
    if len(set(_LINE_LABEL.findall(answer_text))) >= 3:
        return None
    if label := _LABEL.search(answer_text):
        return LETTERS.index(label[1] or label[2] or label[3])
    return None


def grade_choice(answer_text: str, gold_index: int) -> bool:
    """Return whether an answer states the gold choice (exact match of the extracted letter).

    Args:
        answer_text: The model's reply.
        gold_index: The correct choice, 0-3 (A-D).
    """
    return extract_choice(answer_text) == gold_index


# ----------------------------------------------------------------------------------- number extraction

_ANSWER_MARK = re.compile(r"\banswer\b", re.IGNORECASE)
# '1,234.5' (thousands groups), '1234', '.5', a minus sign that is not a subtraction ('16-3' is 16 and 3).
_NUMBER = re.compile(r"(?<![\w.)])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])\.\d+")


def _to_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", "").replace("$", "").strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def extract_number(answer_text: str) -> Decimal | None:
    """Return the number an answer gives, or None when it gives none.

    The first number after the last 'Answer' (as in 'Answer: 18', 'the answer is $18') if there is one,
    else the last number in the text. Thousands separators and '$' are ignored.

    Args:
        answer_text: The model's reply.
    """
    text = answer_text.replace("$", "")
    marks = list(_ANSWER_MARK.finditer(text))
    if marks and (after := _NUMBER.search(text, marks[-1].end())):
        return _to_decimal(after[0])
    numbers = _NUMBER.findall(text)
    return _to_decimal(numbers[-1]) if numbers else None


def grade_number(answer_text: str, gold: str | float | int | Decimal) -> bool:
    """Return whether an answer's number equals the gold number (numerically: '18.00' equals 18).

    Args:
        answer_text: The model's reply.
        gold: The correct number, e.g. '1,200', 18, '$5'.
    """
    expected = gold if isinstance(gold, Decimal) else _to_decimal(str(gold))
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    found = extract_number(answer_text)
    return found is not None and found == expected


def gsm8k_gold(solution: str) -> str:
    """Return the final number of a GSM8K reference solution (after '####'), without commas or '$'."""
    if "####" not in solution:
        raise ValueError("a GSM8K solution ends with '#### <number>'")
    return solution.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")


# ------------------------------------------------------------------------------------------- loaders


def _mmlu_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.csv"))
    if not files and (directory / "test").is_dir():
        files = sorted((directory / "test").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no MMLU CSV files in {directory}")
    return files


def _read_mmlu(path: Path) -> list[dict[str, str]]:
    """Read one subject's CSV, with or without its header row."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if rows and tuple(cell.strip().lower() for cell in rows[0]) == _MMLU_COLUMNS:
        rows = rows[1:]
    out = []
    for number, cells in enumerate(rows, 1):
        if len(cells) != len(_MMLU_COLUMNS):
            raise ValueError(f"{path}: row {number} has {len(cells)} columns, not {len(_MMLU_COLUMNS)}")
        out.append(dict(zip(_MMLU_COLUMNS, cells, strict=True)))
    return out


def _gold_index(value: str, where: str) -> int:
    value = value.strip()
    if value in LETTERS:
        return LETTERS.index(value)
    if value.isdigit() and int(value) < len(LETTERS):
        return int(value)
    raise ValueError(f"{where}: answer {value!r} is neither 0-3 nor A-D")


def load_mmlu(directory: str | os.PathLike[str], n: int, seed: int = 0) -> list[MmluRow]:
    """Return a fixed, seeded sample of MMLU questions spread across subjects.

    Subjects are visited in a seeded order, round-robin, each giving its next question from a seeded
    shuffle of its own; so n <= 57 questions come from n different subjects, the same seed gives the
    same questions in the same order on every run, and a smaller n gives the first of a larger n's sample.

    Args:
        directory: The folder of the subject CSVs (`<subject>_test.csv`), or its parent holding `test/`.
        n: How many questions; at most all of them.
        seed: The sample's seed.

    Raises:
        FileNotFoundError: The folder has no CSV file.
        ValueError: n is negative, or a row is malformed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    rng = random.Random(seed)
    files = _mmlu_files(Path(directory))
    subjects = [(path, path.stem.removesuffix("_test").removesuffix("_dev").removesuffix("_val")) for path in files]
    rng.shuffle(subjects)
    pools: list[tuple[str, list[tuple[int, dict[str, str]]], str]] = []
    for path, subject in subjects:
        rows = list(enumerate(_read_mmlu(path)))
        rng.shuffle(rows)
        pools.append((subject, rows, str(path)))
    sample: list[MmluRow] = []
    depth = 0
    while len(sample) < n and any(depth < len(rows) for _, rows, _ in pools):
        for subject, rows, where in pools:
            if len(sample) == n:
                break
            if depth < len(rows):
                index, row = rows[depth]
                sample.append(
                    MmluRow(
                        id=f"mmlu-{subject}-{index}",
                        subject=subject,
                        question=row["question"],
                        choice0=row["choice0"],
                        choice1=row["choice1"],
                        choice2=row["choice2"],
                        choice3=row["choice3"],
                        answer=_gold_index(row["answer"], f"{where}: row {index + 1}"),
                    )
                )
        depth += 1
    return sample


def load_gsm8k(path: str | os.PathLike[str], n: int, seed: int = 0) -> list[Gsm8kRow]:
    """Return a fixed, seeded sample of GSM8K problems (same seed, same problems, same order).

    A smaller n gives the first problems of a larger n's sample.

    Args:
        path: The JSONL file (`gsm8k/test.jsonl`): one object with `question` and `answer` a line.
        n: How many problems; at most all of them.
        seed: The sample's seed.

    Raises:
        ValueError: n is negative, or a line is malformed.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    with Path(path).open(encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)  # a smaller n gives a prefix of a larger n's sample
    picked = order[:n]
    sample = []
    for index in picked:
        record = json.loads(lines[index])
        try:
            gold = gsm8k_gold(record["answer"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: line {index + 1}: {err}") from err
        sample.append(Gsm8kRow(id=f"gsm8k-{index}", question=record["question"], answer=record["answer"], gold=gold))
    return sample
