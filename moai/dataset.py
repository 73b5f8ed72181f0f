"""Build routing data for your own pool: run every model of a mix on labelled questions, grade, write JSONL.

The output is the uniform routing format (one line per query and model: id, prompt, task, model, score,
cost) that scorer training reads, plus each answer's text (`response`, empty where the call failed): a
responses file, so a user can train a scorer and a verifier (`moai scorer train-verifier`) for the pool
they actually run, and replay it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from moai.mix_instructions.schema import MixSpec
from moai.scorer.data.qa import grade_choice, grade_number, gsm8k_prompt, load_gsm8k, load_mmlu, mmlu_prompt

__all__ = ["Question", "build_routing_data", "load_questions"]


@dataclass(frozen=True)
class Question:
    """A labelled question: its prompt and how to grade an answer to it."""

    id: str
    task: str
    prompt: str
    grade: Callable[[str], bool]


def load_questions(path: str | os.PathLike[str], n: int, seed: int = 0) -> list[Question]:
    """Return a seeded sample of `n` questions from an MMLU folder of subject CSVs or a GSM8K JSONL file."""
    source = Path(path)
    if source.suffix == ".jsonl":
        return [
            Question(row["id"], "gsm8k", gsm8k_prompt(row), partial(grade_number, gold=row["gold"]))
            for row in load_gsm8k(source, n, seed)
        ]
    if source.is_dir():
        return [
            Question(
                row["id"],
                f"mmlu-{row['subject']}",
                mmlu_prompt(row),
                partial(grade_choice, gold_index=row["answer"]),
            )
            for row in load_mmlu(source, n, seed)
        ]
    raise ValueError(f"{source}: expected an MMLU folder of subject CSVs or a GSM8K .jsonl file")


def _done(out: Path) -> set[tuple[str, str]]:
    if not out.exists():
        return set()
    with out.open(encoding="utf-8") as handle:
        return {(row["id"], row["model"]) for row in map(json.loads, filter(str.strip, handle))}


async def build_routing_data(
    spec: MixSpec, questions: Sequence[Question], out: str | os.PathLike[str], models: Sequence[str] | None = None
) -> int:
    """Run each model of the pool on each question, grade it, and append the lines to `out`.

    Lines already in `out` (same id and model) are kept and skipped, so an interrupted build resumes.
    A model that fails on a question scores 0 with its real cost, as a router would have paid it.

    Returns:
        The number of lines written.
    """
    from moai.api import mix_runtime
    from moai.nodes.call import call_model
    from moai.nodes.prompts import propose_messages
    from moai.nodes.state import RunInfo

    # No fallbacks here: the data must say how each model did, not how its stand-in did.
    alone = {name: model.model_copy(update={"fallbacks": []}) for name, model in spec.models.items()}
    mix = mix_runtime(spec.model_copy(update={"models": alone}))
    path = Path(out)
    done = _done(path)
    written = 0
    names = list(models or spec.models)
    with path.open("a", encoding="utf-8") as handle:
        for i, question in enumerate(questions, 1):
            for name in names:
                if (question.id, name) in done:
                    continue
                messages = propose_messages(
                    question.prompt,
                    prompt="answer",
                    instructions=None,
                    references=[],
                    critique=None,
                    ask_confidence=False,
                )
                run = RunInfo(run_id=f"dataset:{question.id}", mix=spec.name, arm=None, thread_id=None, user_id=None)
                reply, _, calls = await call_model(
                    mix, "dataset", name, messages, sensitive=False, allowance_usd=None, run=run
                )
                line = {
                    "id": question.id,
                    "prompt": question.prompt,
                    "task": question.task,
                    "model": name,
                    "score": float(reply is not None and question.grade(reply.text)),
                    "cost": sum(call["cost_usd"] for call in calls),
                    # The answer itself: the file is then also a responses file, which
                    # `moai scorer train-verifier` trains on and `provider: replay` replays.
                    "response": reply.text if reply is not None else "",
                }
                handle.write(json.dumps(line) + "\n")
                handle.flush()
                written += 1
            print(f"\r{i}/{len(questions)} questions", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return written
