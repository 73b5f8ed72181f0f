"""How far can agreement cascades go on RouterBench? The ceiling of a large family, searched on train.

The issue's RouterBench target is GPT-4's quality at <= 0.65x its cost. This searches, on the train side
of the same 80/20 split by id that `bench/cascade.py` uses, every cascade of this family, chosen per task
with the task given for free (a perfect task classifier, which no gate has):

- one model alone (any of the 11);
- 2 to 4 cheap models (at most 25% of GPT-4's mean cost on train) propose; when at least k of them give
  the same answer after normalising by the query's form (k = all of them, or all but one of three or
  more), that answer stands; else one escalation model (any other model) answers.

Agreement is the strongest answer-reading judge on this data (`bench/judges.py`): the verifier and the
checks are near chance on ARC-Challenge and Winogrande, and MBPP's prompts state no tests to run. Per
task it keeps the cost-quality Pareto front, then takes the best total quality at each cost share of
GPT-4 (a knapsack over the three fronts). What a policy chosen on train then gives on test is shown
too, for information: nothing here is tuned on test.

Run from the repository root:  python bench/cascade_ceiling.py [--data DIR] [--budget 0.65]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from moai.scorer.answers import normalise, query_form
from moai.scorer.benchmark.cascade import CHEAP_SHARE
from moai.scorer.data.split import is_test_id

DATA = Path(os.environ.get("MOAI_RESPONSES_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "responses"))
RESULTS = Path(__file__).resolve().parent / "results"
STRONG = "gpt-4-1106-preview"
TEST_SHARE, SEED = 0.2, 0


def _rows(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    by_id: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_id[row["id"]][row["model"]] = row
    models = {m for answers in by_id.values() for m in answers}
    return {i: answers for i, answers in by_id.items() if set(answers) == models}


def _policies(models: list[str], cheap: list[str]) -> list[tuple[str, tuple[str, ...], int, str | None]]:
    """Return (name, proposers, agreeing needed, escalation model) for every policy of the family."""
    out: list[tuple[str, tuple[str, ...], int, str | None]] = [(m, (m,), 1, None) for m in models]
    for size in (2, 3, 4):
        for proposers in itertools.combinations(cheap, size):
            for need in {size, max(2, size - 1)}:
                for escalate in (m for m in models if m not in proposers):
                    out.append((f"{'+'.join(proposers)} ({need} agree) else {escalate}", proposers, need, escalate))
    return out


def _run(policy: tuple[str, tuple[str, ...], int, str | None], queries: list[dict[str, Any]]) -> tuple[float, float]:
    """Return the total (quality, cost) of a policy over queries (each: model -> (key, score, cost))."""
    _, proposers, need, escalate = policy
    quality = cost = 0.0
    for q in queries:
        cost += sum(q[m][2] for m in proposers)
        if escalate is None:
            quality += q[proposers[0]][1]
            continue
        votes = Counter(q[m][0] for m in proposers if q[m][0] is not None)
        top = votes.most_common(1)
        if top and top[0][1] >= need:
            quality += next(q[m][1] for m in proposers if q[m][0] == top[0][0])
        else:
            quality += q[escalate][1]
            cost += q[escalate][2]
    return quality, cost


def _front(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Return the points no other point beats on both quality (higher) and cost (lower), cheapest first."""
    out: list[tuple[float, float, int]] = []
    for quality, cost, i in sorted(points, key=lambda p: (p[1], -p[0])):
        if not out or quality > out[-1][0] + 1e-12:
            out.append((quality, cost, i))
    return out


def main() -> None:
    """Search the family on train, print the ceiling per budget, write bench/results/cascade_ceiling.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--budget", type=float, default=0.65)
    args = parser.parse_args()
    by_id = _rows(args.data / "routerbench_train.jsonl.gz")
    models = sorted(next(iter(by_id.values())))
    sides: dict[str, dict[str, list[dict[str, Any]]]] = {"train": defaultdict(list), "test": defaultdict(list)}
    for qid, answers in sorted(by_id.items()):
        form = query_form(answers[STRONG]["prompt"]) or "text"
        side = "test" if is_test_id(qid, TEST_SHARE, SEED) else "train"
        sides[side][answers[STRONG]["task"]].append(
            {
                m: (normalise(r["response"], form), float(r["score"]), float(r["cost"] or 0.0))
                for m, r in answers.items()
            }
        )
    train, test = sides["train"], sides["test"]
    tasks = sorted(train)
    n_train = sum(len(train[t]) for t in tasks)
    mean_cost = {m: sum(q[m][2] for t in tasks for q in train[t]) / n_train for m in models}
    cheap = [m for m in models if m != STRONG and mean_cost[m] <= CHEAP_SHARE * mean_cost[STRONG]]
    policies = _policies(models, cheap)
    fronts = {}
    for task in tasks:
        fronts[task] = _front([(*_run(p, train[task]), i) for i, p in enumerate(policies)])
    strong_q = {s: sum(q[STRONG][1] for t in tasks for q in sides[s][t]) for s in sides}
    strong_c = {s: sum(q[STRONG][2] for t in tasks for q in sides[s][t]) for s in sides}
    n = {s: sum(len(sides[s][t]) for t in tasks) for s in sides}
    lines = [
        "# Ceiling of agreement cascades on RouterBench (`python bench/cascade_ceiling.py`)\n",
        f"Train side of the 80/20 split by id (seed {SEED}): {n['train']} queries, test {n['test']}; tasks "
        f"{', '.join(f'{t} {len(train[t])}' for t in tasks)}; {len(policies)} policies per task, "
        f"{len(cheap)} cheap models ({', '.join(cheap)}); the task is given for free.\n",
        f"{STRONG} on train: quality {strong_q['train'] / n['train']:.4f}; "
        f"on test {strong_q['test'] / n['test']:.4f}.\n",
        "Per task, the best policy of the family on train at any cost, against GPT-4 on the same queries:\n",
        "| task | GPT-4 quality | best policy's quality | its cost vs GPT-4 | policy |",
        "|---|---:|---:|---:|---|",
    ]
    for task in tasks:
        q, c, i = max(fronts[task], key=lambda p: (p[0], -p[1]))
        g_q = sum(x[STRONG][1] for x in train[task])
        g_c = sum(x[STRONG][2] for x in train[task])
        size = len(train[task])
        lines.append(f"| {task} | {g_q / size:.4f} | {q / size:.4f} | {c / g_c:.3f}x | {policies[i][0]} |")
    lines += [
        "",
        "The best total quality of one policy per task, within each budget (a share of GPT-4's cost on train):\n",
        "| budget | train quality | vs GPT-4 on train | the same policies on test | test cost vs GPT-4 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for budget in sorted({0.5, args.budget, 0.8, 1.0, 1.2}):
        best: tuple[float, float, tuple[int, ...]] | None = None
        for combo in itertools.product(*(fronts[t] for t in tasks)):
            cost = sum(p[1] for p in combo)
            quality = sum(p[0] for p in combo)
            if cost <= budget * strong_c["train"] and (best is None or quality > best[0]):
                best = (quality, cost, tuple(p[2] for p in combo))
        if best is None:
            continue
        on_test = [_run(policies[i], test[t]) for i, t in zip(best[2], tasks, strict=True)]
        test_q, test_c = sum(q for q, _ in on_test), sum(c for _, c in on_test)
        lines.append(
            f"| {budget:.2f}x | {best[0] / n['train']:.4f} | {best[0] / strong_q['train']:.2%} | "
            f"{test_q / n['test']:.4f} ({test_q / strong_q['test']:.2%} of GPT-4) | {test_c / strong_c['test']:.3f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "cascade_ceiling.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
