"""Judges that read the answers themselves: agreement, the expected form, the arithmetic written out.

Pure functions over texts, no model and no graph: the judge step (`read:` in a mix) calls them on the
latest answers, whose texts are data here, parsed and never obeyed. Each returns a score in [0, 1] per
answer, or None where the judge has nothing to say (one answer cannot agree with another; a query that
asks for no particular form; an answer that writes no arithmetic).

Every function is bounded on any input: only the last `MAX_ANSWER_CHARS` characters of an answer and
the first `MAX_QUERY_CHARS` of a query are read, every pattern is linear (bounded repetitions, no nested
quantifiers), numbers longer than `MAX_DIGITS` digits are skipped, at most `MAX_EQUATIONS` equations of
at most `MAX_OPERATIONS` operations each (or calculator annotations of at most `MAX_EXPRESSION_CHARS`
characters and `MAX_DEPTH` nested parentheses) are recomputed, with `Decimal` at a fixed precision and no eval.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Literal

from moai.mix_instructions.schema import READ_JUDGES
from moai.scorer.code import code_score
from moai.scorer.data.qa import LETTERS, extract_choice, extract_number
from moai.scorer.logprob import logprob_score

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_EQUATIONS",
    "MAX_EXPRESSION_CHARS",
    "MAX_OPERATIONS",
    "MAX_QUERY_CHARS",
    "READ_JUDGES",
    "Form",
    "agreement",
    "annotation_score",
    "aread_scores",
    "arithmetic_score",
    "form_score",
    "normalise",
    "query_form",
    "read_scores",
]

MAX_ANSWER_CHARS = 20_000
"""Characters of an answer that are read: the last ones, where a final answer stands."""
MAX_QUERY_CHARS = 20_000
"""Characters of a query that are read to tell which form of answer it asks for."""
MAX_DIGITS = 30
"""Digits of a number beyond which an equation is not recomputed (skipped, neither right nor wrong)."""
MAX_EQUATIONS = 50
"""Equations of one answer that are recomputed; the first ones count."""
MAX_OPERATIONS = 8
"""Operations of one equation's left side ('1 + 2 * 3 = 7' has two)."""
MAX_EXPRESSION_CHARS = 200
"""Characters of a calculator annotation's expression ('<<(2 + 3) * 4=20>>') beyond which it is skipped."""
MAX_DEPTH = 8
"""Nesting of parentheses in an annotation's expression beyond which it is skipped."""
MAX_SHORT_TEXT = 200
"""Characters of the normalised last line that a short-text answer is compared by."""

Form = Literal["choice", "number", "text"]

_DECIMAL = Context(prec=60, Emax=999, Emin=-999)

# A query that lists lettered choices on their own lines ('A) ...', '(B) ...', 'C. ...').
_CHOICE_LINE = re.compile(r"^[ \t]{0,8}[(\[]?([A-E])[)\].:]", re.MULTILINE)
_CHOICE_ASK = re.compile(r"\b(?:letter of the correct|single choice|choices?\s+\(?A\b)", re.IGNORECASE)
_NUMBER_ASK = re.compile(
    r"\bhow\s+(?:many|much|long|far|old|fast)\b|<number>|\bwhat\s+(?:number|percent(?:age)?)\b"
    r"|\bcalculate\b|\bcompute\b",
    re.IGNORECASE,
)
_BARE_LETTER = re.compile(r"^[\s\[\]()'\"*_.:]{0,8}([A-E])[\s\[\]()'\"*_.:]{0,8}$")
_ESCAPES = re.compile(r"\\[nrt]")
_WORD = re.compile(r"[^\W_]+")

# One number of an equation: no sign (a minus is an operator or the sign below), at most a few thousands
# groups and decimals; longer runs do not match, so a huge number is skipped.
_NUM = rf"\d{{1,{MAX_DIGITS}}}(?:,\d{{3}}){{0,10}}(?:\.\d{{1,{MAX_DIGITS}}})?"
_OP = "(?:[+\\-*/\u00d7x\u00f7]|" r"\\times|\\cdot|\\div)"
_GAP = r"[ \t]{0,4}"
_EQUATION = re.compile(
    rf"(?<![\w.,])(-?{_NUM}(?:{_GAP}{_OP}{_GAP}-?{_NUM}){{1,{MAX_OPERATIONS}}}){_GAP}={_GAP}\$?(-?{_NUM})(?![\w.,]?\d)"
)
# A calculator annotation, as GSM8K-trained models write them: '... = $<<150/10*5=75>>75.'
_ANNOTATION = re.compile(rf"<<([^<>=\n]{{1,{MAX_EXPRESSION_CHARS}}})={_GAP}\$?(-?{_NUM}){_GAP}>>")
_TOKEN = re.compile(rf"{_GAP}(?:({_NUM})|({_OP})|([()]))")
_TIMES = frozenset(("*", "x", "\u00d7", "\\times", "\\cdot"))
_DIVIDE = frozenset(("/", "\u00f7", "\\div"))
_BEFORE_OPERAND = re.compile("(?:[+\\-*/\u00d7\u00f7^)]|" r"\\times|\\cdot|\\div|(?<![A-Za-z])x)$")
_AFTER_RESULT = re.compile(rf"^(?:{_GAP}(?:{_OP}|[%^(])|[ \t]?/)")


def _tail(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    return text[-limit:] if len(text) > limit else text


def query_form(query: str) -> Form | None:
    """Return the form of answer a query asks for: 'choice', 'number', or None when it asks for none.

    A query that lists two or more lettered choices on their own lines (or asks for 'a single choice')
    asks for a choice letter; one that asks 'how many', 'how much', '<number>', ... for a number.

    Args:
        query: The user's query.
    """
    head = query[:MAX_QUERY_CHARS]
    if len(set(_CHOICE_LINE.findall(head))) >= 2 or _CHOICE_ASK.search(head):
        return "choice"
    if _NUMBER_ASK.search(head):
        return "number"
    return None


def normalise(answer: str, form: Form) -> str | None:
    """Return the key an answer is compared by, or None when it gives nothing of that form.

    'choice': the letter it states ('Answer: B', '(B)', "['B']"); 'number': its final number in a
    canonical spelling ('1,200.0' and '1200' agree); 'text': its last non-empty line, lower-cased,
    words only, at most `MAX_SHORT_TEXT` characters.

    Args:
        answer: A model's answer.
        form: The form to read it by.
    """
    text = _tail(answer)
    if form == "choice":
        index = extract_choice(text)
        if index is not None:
            return LETTERS[index]
        # a lone letter, also as a recorded list of one reply: "['B\\n']"
        bare = _BARE_LETTER.match(_ESCAPES.sub(" ", text)) if len(text) <= 64 else None
        return bare[1] if bare else None
    if form == "number":
        number = extract_number(text)
        if number is None or number.adjusted() > MAX_DIGITS:
            return None
        return format(number.normalize(_DECIMAL), "f") if number else "0"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    words = " ".join(_WORD.findall(lines[-1][-4 * MAX_SHORT_TEXT :].lower()))
    return words[:MAX_SHORT_TEXT] or None


def agreement(answers: Sequence[str], form: Form) -> list[float | None]:
    """Return each answer's share of the other answers that agree with it after normalising.

    An answer of no readable form agrees with none (0.0); with fewer than two answers there is nothing
    to agree with, and every score is None.

    Args:
        answers: The answers to one query (of several models, or several samples of one).
        form: The form they are compared by (see `normalise`).
    """
    if len(answers) < 2:
        return [None] * len(answers)
    keys = [normalise(answer, form) for answer in answers]
    counts = Counter(key for key in keys if key is not None)
    others = len(answers) - 1
    return [0.0 if key is None else (counts[key] - 1) / others for key in keys]


def form_score(query: str, answer: str) -> float | None:
    """Return 1.0 when an answer has the form the query asks for, 0.0 when not, None when it asks for none.

    Args:
        query: The user's query.
        answer: A model's answer.
    """
    form = query_form(query)
    if form is None:
        return None
    return 0.0 if normalise(answer, form) is None else 1.0


def arithmetic_score(answer: str) -> float | None:
    """Return the share of the equations an answer writes ('12 * 3 = 36') whose result is right.

    Each left side (numbers joined by + - * / x, the times and division signs, \\times \\cdot \\div;
    multiplication and division first) is recomputed with `Decimal`; a result written with k decimals
    is right when it is within 10^-k of the exact value (so rounding and truncation both pass:
    '10 / 3 = 3.33'). An equation that is part of a longer expression ('(2 + 3) * 4 = 20' is not read
    as '3) * 4'), or that has a number of more than `MAX_DIGITS` digits, is skipped; a division by zero
    counts as wrong. A calculator annotation with parentheses ('<<15 - (4/5 * 15)=3>>', as GSM8K-trained
    models write them) is recomputed whole, parentheses first; one that is not plain arithmetic (a
    letter, a '%', more than `MAX_EXPRESSION_CHARS` characters or `MAX_DEPTH` nested parentheses) is
    skipped. The first `MAX_EQUATIONS` read, in the order written, count. None when none is read.

    Args:
        answer: A model's answer.
    """
    right = total = 0
    for value, written in _equations(_tail(answer)):
        total += 1
        if value is not None and _close(value, written):
            right += 1
        if total >= MAX_EQUATIONS:
            break
    return right / total if total else None


def annotation_score(answer: str) -> float | None:
    """Return the share of the calculator annotations an answer writes ('<<150/10*5=75>>') whose result is right.

    The annotations GSM8K-trained models write beside their working, recomputed as `arithmetic_score`
    recomputes them (parentheses too), and read alone: a model's own calculator notes tell more of it
    than the equations of its prose. An annotation that is not plain arithmetic is skipped; the first
    `MAX_EQUATIONS` read count. None when none is read.

    Args:
        answer: A model's answer.
    """
    right = total = 0
    for match in _ANNOTATION.finditer(_tail(answer)):
        try:
            value = _compute(match[1])
        except _Unreadable:
            continue
        written = _number(match[2])
        if written is None:
            continue
        total += 1
        if value is not None and _close(value, written):
            right += 1
        if total >= MAX_EQUATIONS:
            break
    return right / total if total else None


def _equations(text: str) -> Iterator[tuple[Decimal | None, Decimal]]:
    """Yield (the recomputed value or None when undefined, the written result) of each equation read."""
    plain = ((m.start(), False, m) for m in _EQUATION.finditer(text))
    notes = ((m.start(), True, m) for m in _ANNOTATION.finditer(text))
    inside = -1  # end of the last annotation read: an equation within it is not read twice
    for start, note, match in heapq.merge(plain, notes, key=lambda item: item[0]):
        if note:
            # Without parentheses an annotation is a plain equation, read as one.
            if "(" not in match[1]:
                continue
            try:
                value = _compute(match[1])
            except _Unreadable:
                continue
            inside = match.end()
        else:
            if start < inside:
                continue
            if _BEFORE_OPERAND.search(text[max(0, start - 8) : start].rstrip()):
                continue
            if _AFTER_RESULT.match(text[match.end() : match.end() + 8]):
                continue
            value = _evaluate(match[1])
        written = _number(match[2])
        if written is not None:
            yield value, written


def read_scores(judges: Sequence[str], query: str, answers: Sequence[str]) -> list[dict[str, float | None]]:
    """Return, for each answer, the score of each declared answer-reading judge (None: no opinion).

    Agreement compares the answers by the form the query asks for, or by their short text. 'code' and
    'logprob' are left None here: `aread_scores` gives them (one runs a sandbox, the other reads call data);
    so is 'verifier', which the judge step scores with its checkpoint (`moai.scorer.verifier`).

    Args:
        judges: Names out of `READ_JUDGES`.
        query: The user's query.
        answers: The latest answers to it.
    """
    unknown = [name for name in judges if name not in READ_JUDGES]
    if unknown:
        raise ValueError(f"unknown answer-reading judge(s) {unknown}; valid: {', '.join(READ_JUDGES)}")
    agreed = agreement(answers, query_form(query) or "text") if "agreement" in judges else [None] * len(answers)
    out: list[dict[str, float | None]] = []
    for answer, agree in zip(answers, agreed, strict=True):
        scores: dict[str, float | None] = {}
        for name in judges:
            if name == "agreement":
                scores[name] = agree
            elif name == "form":
                scores[name] = form_score(query, answer)
            elif name == "arithmetic":
                scores[name] = arithmetic_score(answer)
            else:
                scores[name] = None
        out.append(scores)
    return out


async def aread_scores(
    judges: Sequence[str],
    query: str,
    answers: Sequence[str],
    logprobs: Sequence[Mapping[str, object] | None] | None = None,
) -> list[dict[str, float | None]]:
    """Return `read_scores`, with 'code' and 'logprob' given too; the answers' code runs concurrently.

    Args:
        judges: Names out of `READ_JUDGES`.
        query: The user's query.
        answers: The latest answers to it.
        logprobs: Each answer's token log-probability statistics (`moai.scorer.logprob.logprob_stats`),
            None where its provider gave none.
    """
    out = read_scores(judges, query, answers)
    if "code" in judges:
        codes = await asyncio.gather(*(code_score(query, answer) for answer in answers))
        for scores, code in zip(out, codes, strict=True):
            scores["code"] = code
    if "logprob" in judges:
        stats = list(logprobs) if logprobs is not None else [None] * len(answers)
        for scores, stat in zip(out, stats, strict=True):
            scores["logprob"] = logprob_score(stat)
    return out


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


class _Unreadable(Exception):
    """An expression that is not plain arithmetic: skipped, neither right nor wrong."""


def _evaluate(expression: str) -> Decimal | None:
    """Return the value of an expression, or None if it cannot be had (unreadable or undefined)."""
    try:
        return _compute(expression)
    except _Unreadable:
        return None


def _compute(expression: str) -> Decimal | None:
    """Return the value of numbers joined by operators and parentheses; None where it is undefined.

    Multiplication and division before addition and subtraction, parentheses first; a '-' where a
    number is due is its sign (once). Recursive descent over at most `MAX_DEPTH` nested parentheses, so
    its depth is bounded too.

    Raises:
        _Unreadable: Not such an expression, no operation in it, or nested deeper than `MAX_DEPTH`.
    """
    tokens: list[Decimal | str] = []
    depth, at, end = 0, 0, len(expression.rstrip())
    while at < end:
        match = _TOKEN.match(expression, at)
        if match is None:
            raise _Unreadable
        if match[1] is not None:
            number = _number(match[1])
            if number is None:
                raise _Unreadable
            tokens.append(number)
        else:
            token = match[2] or match[3]
            depth += (token == "(") - (token == ")")
            if not 0 <= depth <= MAX_DEPTH:
                raise _Unreadable
            tokens.append(token)
        at = match.end()
    if depth or not any(isinstance(t, str) and t not in ("(", ")") for t in tokens):
        raise _Unreadable
    parser = _Parser(tokens)
    try:
        value = parser.sum()
    except (InvalidOperation, DivisionByZero, Overflow):
        return None
    if parser.at != len(tokens):
        raise _Unreadable
    return value


class _Parser:
    """Recursive descent over the tokens of `_compute` (numbers as `Decimal`, operators and parentheses)."""

    def __init__(self, tokens: list[Decimal | str]) -> None:
        self.tokens = tokens
        self.at = 0

    def _next(self) -> Decimal | str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> Decimal | str:
        token = self._next()
        if token is None:
            raise _Unreadable
        self.at += 1
        return token

    def sum(self) -> Decimal | None:
        value = self.product()
        while (op := self._next()) in ("+", "-"):
            self.at += 1
            term = self.product()
            if value is not None and term is not None:
                value = _DECIMAL.add(value, term) if op == "+" else _DECIMAL.subtract(value, term)
            else:
                value = None
        return value

    def product(self) -> Decimal | None:
        value = self.factor()
        while isinstance(op := self._next(), str) and (op in _TIMES or op in _DIVIDE):
            self.at += 1
            term = self.factor()
            if value is None or term is None or (op in _DIVIDE and term == 0):
                value = None
            else:
                value = _DECIMAL.multiply(value, term) if op in _TIMES else _DECIMAL.divide(value, term)
        return value

    def factor(self, signed: bool = False) -> Decimal | None:
        token = self._take()
        if isinstance(token, Decimal):
            return token
        if token == "-" and not signed:
            value = self.factor(signed=True)
            return None if value is None else _DECIMAL.minus(value)
        if token == "(":
            value = self.sum()
            if self._take() != ")":
                raise _Unreadable
            return value
        raise _Unreadable


def _close(value: Decimal, written: Decimal) -> bool:
    exponent = written.as_tuple().exponent
    decimals = max(0, -exponent) if isinstance(exponent, int) else 0
    return abs(_DECIMAL.subtract(value, written)) < Decimal(1).scaleb(-decimals)
