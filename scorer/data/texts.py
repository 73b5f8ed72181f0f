"""What of a routing prompt the encoder sees: the query, without the few-shot scaffolding of its benchmark.

Benchmark prompts often start with the same worked examples for every query of a task (RouterBench's
ARC-Challenge and Winogrande prompts share 1,200-1,650 characters of five-shot examples and end with the
question). Encoded whole, every query of such a task looks alike, and the encoder's window (256 word
pieces for MiniLM) may not even reach the question. The scorer meets bare user queries at run time, so
training on the query alone is also the faithful choice. Only whole blocks (ending with a blank line)
that every prompt of the task begins with are dropped; prompts of a task with a single query are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["query_texts", "shared_prefix"]

_BLOCK_END = "\n\n"


def shared_prefix(prompts: Sequence[str]) -> str:
    """Return the leading blocks (text up to and including a blank line) that all prompts share."""
    if len(prompts) < 2:
        return ""
    # The lexicographically smallest and largest strings share exactly the prefix that all share.
    low, high = min(prompts), max(prompts)
    n = next((i for i, (a, b) in enumerate(zip(low, high, strict=False)) if a != b), min(len(low), len(high)))
    common = low[:n]
    cut = common.rfind(_BLOCK_END)
    return common[: cut + len(_BLOCK_END)] if cut >= 0 else ""


def query_texts(prompts: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """Return each prompt without the blocks that every prompt of its task starts with.

    A prompt that would be left empty is kept whole.
    """
    if len(prompts) != len(tasks):
        raise ValueError(f"{len(prompts)} prompts but {len(tasks)} tasks")
    by_task: dict[str, list[str]] = {}
    for prompt, task in zip(prompts, tasks, strict=True):
        by_task.setdefault(task, []).append(prompt)
    prefix = {task: shared_prefix(group) for task, group in by_task.items()}
    out = []
    for prompt, task in zip(prompts, tasks, strict=True):
        rest = prompt[len(prefix[task]) :]
        out.append(rest if rest.strip() else prompt)
    return out
