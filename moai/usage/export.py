"""`moai usage export`: turn the runs users scored into routing data, to train the gate's scorer on.

The output is the uniform routing JSONL that `moai scorer train` reads, one line per (run, model that
answered it): ``{"id": run_id, "prompt": query, "task": mix, "model": model, "score": the run's mean
feedback, "cost": what that model's calls on the run cost}``. Only runs with feedback can be exported: a
line needs a score, and the feedback is the only score the usage database holds.

With `responses=True` it writes a responses file instead, the format `provider: replay` reads: one line per
(run, model whose answer was recorded; see the mix field `usage.record_answers`), that routing line plus
``response`` (the model's first recorded answer on the run), ``tokens_in`` and ``tokens_out``, with
``cost`` the cost of that one call, so a replay charges what the live call cost. ``score`` is the run's
mean feedback, or null where it has none: replay does not need one, so every recorded answer is exported.
A sensitive run has no recorded answer, so none of it is exported.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from moai.usage.report import Usage, read_usage

__all__ = ["export_feedback", "feedback_lines", "response_lines"]


def feedback_lines(usage: Usage) -> list[dict[str, Any]]:
    """Return the routing lines of the runs that got feedback, oldest run first.

    A model answered a run when it gave an ok reply there (the run's `models_used`); its cost is the sum
    over all its calls on the run, failed ones included (an empty reply is billed).
    """
    scores = usage.run_scores()
    answered = usage.answered()
    cost: dict[tuple[str, str], float] = defaultdict(float)
    for call in usage.calls:
        cost[call["run_id"], call["model"]] += call["cost_usd"] or 0.0
    lines: list[dict[str, Any]] = []
    for run in usage.runs:
        run_id = run["run_id"]
        if run_id not in scores:
            continue
        for model in answered[run_id]:
            lines.append(
                {
                    "id": run_id,
                    "prompt": run["query"] or "",
                    "task": run["mix"],
                    "model": model,
                    "score": min(1.0, max(0.0, scores[run_id])),
                    "cost": cost.get((run_id, model)),
                }
            )
    return lines


def response_lines(usage: Usage) -> list[dict[str, Any]]:
    """Return the responses-file lines of the recorded answers, oldest run first.

    A model's first ok call on a run that has a recorded answer makes its line (a later layer's answer
    has seen the others' and is not the model's answer to the query alone).
    """
    scores = usage.run_scores()
    first: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for call in usage.calls:
        if call["status"] == "ok" and call.get("response") is not None:
            first[call["run_id"]].setdefault(call["model"], call)
    lines: list[dict[str, Any]] = []
    for run in usage.runs:
        run_id = run["run_id"]
        for model, call in first.get(run_id, {}).items():
            score = scores.get(run_id)
            lines.append(
                {
                    "id": run_id,
                    "prompt": run["query"] or "",
                    "task": run["mix"],
                    "model": model,
                    "score": None if score is None else min(1.0, max(0.0, score)),
                    "cost": call["cost_usd"],
                    "response": call["response"],
                    "tokens_in": call["tokens_in"],
                    "tokens_out": call["tokens_out"],
                }
            )
    return lines


def export_feedback(db: str, out: str | Path, since: float | None = None, *, responses: bool = False) -> int:
    """Write the routing lines of the runs that got feedback to `out` ("-": standard output).

    Args:
        db: The usage database (a SQLite file or a `postgresql://` URL).
        out: The JSONL file to write (replaced), or "-".
        since: Only runs started at or after this Unix time.
        responses: Write the recorded answers as a responses file instead (see `response_lines`).

    Returns:
        How many lines were written.
    """
    usage = read_usage(db, since)
    lines = response_lines(usage) if responses else feedback_lines(usage)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return len(lines)
