"""Run a mix whose models replay recorded answers over many recorded queries, and score each run.

Every run is a real run of the compiled graph (`moai.api.load_mix`, `ainvoke`), at most `concurrency` at
a time in one event loop. A run's quality is the recorded score of the answer it returned: the answer is
matched, by its text, to the recorded answers of the models the run called successfully (the replay
provider answers with a model's recorded text, which a `best` or `last` aggregate passes through as is),
so which model's answer came back is known, not guessed from the trace (a synthesized answer matches
none and scores 0). Its cost is the sum of the recorded costs of all its calls. A run that fails (every
route failed) scores 0, is counted in `failed`, and costs 0 (its calls are not returned).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moai.errors import MixRunError
from moai.mix_instructions import MixSpec, load_spec, resolve_path
from moai.scorer.data.responses import resolve_responses, responses_index

__all__ = ["DEFAULT_CONCURRENCY", "Outcome", "Task", "run_files", "run_mix", "summarise"]

DEFAULT_CONCURRENCY = 32
"""Runs in flight at once: replayed calls do no I/O, so this only bounds memory."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One run of a mix on one recorded query."""

    id: str
    model: str | None
    """The pool member whose recorded answer the run returned (None: the run failed, or none matched)."""
    score: float
    cost: float
    called: tuple[str, ...]
    """The pool members the run called successfully, in order."""
    failed: bool


def _recorded_by(spec: MixSpec, source: str) -> Callable[[str, str], Any]:
    def find(name: str, prompt: str) -> Any:
        model = spec.models[name]
        if model.provider != "replay" or model.responses is None:
            return None
        return responses_index(resolve_responses(model.responses, source)).find(model.model, prompt)

    return find


def _outcome(qid: str, prompt: str, result: dict[str, Any], find: Callable[[str, str], Any]) -> Outcome:
    calls = result["calls"]
    called = tuple(dict.fromkeys(c["model"] for c in calls if c["status"] == "ok"))
    answer = result["answer"].strip()
    model, score = None, 0.0
    for name in reversed(called):  # the latest call whose recorded answer is the one returned
        found = find(name, prompt)
        if found is not None and found.response.strip() == answer:
            model, score = name, float(found.score or 0.0)
            break
    return Outcome(qid, model, score, sum(c["cost_usd"] for c in calls), called, failed=False)


def run_mix(
    mix: str | os.PathLike[str],
    queries: Sequence[tuple[str, str]],
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[Outcome]:
    """Run the mix file on each (id, prompt) and return the outcomes in the same order.

    Args:
        mix: A mix file whose models replay recorded answers (`provider: replay`).
        queries: The queries, by id and prompt (the text the graph is given).
        concurrency: Most runs in flight at once.
    """
    from moai.api import load_mix

    source = str(resolve_path(mix))
    spec = load_spec(mix)
    graph = load_mix(mix, usage_db="off")
    find = _recorded_by(spec, source)

    async def go() -> list[Outcome]:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(qid: str, prompt: str) -> Outcome:
            async with gate:
                try:
                    result = await graph.ainvoke({"query": prompt})
                except MixRunError:
                    return Outcome(qid, None, 0.0, 0.0, (), failed=True)
            return _outcome(qid, prompt, dict(result), find)

        return list(await asyncio.gather(*(one(qid, prompt) for qid, prompt in queries)))

    return asyncio.run(go())


def summarise(outcomes: Sequence[Outcome], strong: Sequence[str] = ()) -> dict[str, Any]:
    """Return the mean quality and cost of the runs, the share that called a strong model, and the failures."""
    n = max(len(outcomes), 1)
    return {
        "quality": sum(o.score for o in outcomes) / n,
        "cost": sum(o.cost for o in outcomes) / n,
        "strong_share": sum(any(m in strong for m in o.called) for o in outcomes) / n,
        "failed": sum(o.failed for o in outcomes),
    }


Task = tuple[str, Sequence[tuple[str, str]], Sequence[str], int]
"""One mix file to run: its path, the (id, prompt) queries, the strong models, the runs in flight at once."""


def _run_file(task: Task) -> tuple[dict[str, Any], float]:
    path, queries, strong, concurrency = task
    start = time.perf_counter()
    return summarise(run_mix(path, queries, concurrency), strong), time.perf_counter() - start


def run_files(tasks: Sequence[Task], jobs: int = 1) -> list[tuple[dict[str, Any], float]]:
    """Run every mix file on its queries; return each one's `summarise` and the seconds it took, in order.

    Args:
        tasks: The mix files and their queries.
        jobs: Mix files run at once, each in a forked worker process (1: one after the other, here).
    """
    if jobs <= 1 or len(tasks) <= 1:
        return [_run_file(task) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: the workers share the responses files already indexed here instead of reading them again
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_run_file, tasks))
