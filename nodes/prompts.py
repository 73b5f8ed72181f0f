"""The prompts of the nodes, and the parsers of what models say back."""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

__all__ = ["aggregate_messages", "judge_messages", "parse_confidence", "parse_judgement", "propose_messages"]

ANSWER = "You are a helpful assistant. Answer the question correctly and concisely."
REFERENCES = (
    "You have been provided with responses from various models to the question. Critically evaluate "
    "them, as some may be wrong, and write a single, accurate, well-structured answer. Do not simply "
    "copy them.\n\nResponses:\n{responses}"
)
IMPROVE = (
    "Here is a draft answer to the question. Improve it: fix any mistake, make it clearer and more "
    "complete. Reply with the improved answer only.\n\nDraft:\n{draft}"
)
REVISE = (
    "Here is your previous answer to the question and a reviewer's critique. Revise the answer to "
    "address the critique. Reply with the revised answer only.\n\nPrevious answer:\n{draft}\n\n"
    "Critique:\n{critique}"
)
CONFIDENCE = "After your answer, add a last line 'Confidence: X', with X from 0 to 1: how sure you are."
JUDGE = (
    "You grade answers to a question. Give each answer a score from 0 (wrong) to 10 (correct and "
    "complete), one line each, as 'Answer N: SCORE'. Then write 'Critique:' and say briefly what "
    "the best answer gets wrong or lacks."
)

_CONFIDENCE = re.compile(r"^\W*confidence\W*[:=]?\s*(\d*\.?\d+)\s*(%?)\W*$", re.IGNORECASE | re.MULTILINE)
_SCORE = re.compile(r"answer\s*#?\s*(\d+)\s*[:=\-]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_SINGLE = re.compile(r"(?:score|rating)\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_CRITIQUE = re.compile(r"critique\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)


def _numbered(texts: list[str]) -> str:
    return "\n\n".join(f"{i}. {text}" for i, text in enumerate(texts, 1))


def propose_messages(
    query: str,
    *,
    history: Sequence[BaseMessage] = (),
    prompt: str,
    instructions: str | None,
    references: list[str],
    critique: str | None,
    ask_confidence: bool,
) -> list[BaseMessage]:
    """Build the messages of one proposer call."""
    system = instructions or ANSWER
    if prompt == "improve" and references:
        system += "\n\n" + IMPROVE.format(draft=references[-1])
    elif prompt == "revise" and references:
        system += "\n\n" + REVISE.format(draft=references[-1], critique=critique or "(none)")
    elif references:
        system += "\n\n" + REFERENCES.format(responses=_numbered(references))
    if ask_confidence:
        system += "\n\n" + CONFIDENCE
    return [SystemMessage(system), *history, HumanMessage(query)]


def judge_messages(query: str, answers: list[str]) -> list[BaseMessage]:
    """Build the messages of a cross-assessment call."""
    listed = "\n\n".join(f"Answer {i}:\n{text}" for i, text in enumerate(answers, 1))
    return [SystemMessage(JUDGE), HumanMessage(f"Question:\n{query}\n\n{listed}")]


def aggregate_messages(query: str, answers: list[str], history: Sequence[BaseMessage] = ()) -> list[BaseMessage]:
    """Build the messages of a Mixture-of-Agents aggregation call."""
    system = SystemMessage(ANSWER + "\n\n" + REFERENCES.format(responses=_numbered(answers)))
    return [system, *history, HumanMessage(query)]


def parse_confidence(text: str) -> tuple[str, float | None]:
    """Split a stated 'Confidence: X' line off an answer; return the answer and X in [0, 1]."""
    matches = list(_CONFIDENCE.finditer(text))
    if not matches:
        return text.strip(), None
    last = matches[-1]
    value = float(last[1]) / (100 if last[2] or float(last[1]) > 1 else 1)
    return (text[: last.start()] + text[last.end() :]).strip(), min(max(value, 0.0), 1.0)


def parse_judgement(text: str, count: int) -> tuple[list[float | None], str | None]:
    """Read the judge's 0-10 scores (as [0, 1]) for `count` answers, and its critique."""
    scores: list[float | None] = [None] * count
    for number, value in _SCORE.findall(text):
        if 1 <= int(number) <= count:
            scores[int(number) - 1] = min(float(value), 10.0) / 10
    if count == 1 and scores[0] is None and (single := _SINGLE.search(text)):
        scores[0] = min(float(single[1]), 10.0) / 10
    critique = _CRITIQUE.search(text)
    return scores, (critique[1].strip() if critique else text.strip()) or None
