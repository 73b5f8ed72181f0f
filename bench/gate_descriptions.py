"""The descriptions gate's latency: one query at a time against a 10-model pool, static encoder included.

Setup: a 10-model mix (`provider: fake`, prices, latencies and privacy tiers as in `bench/gate.py`) whose
gate is `scorer: descriptions`; each model declares a description, 4 example queries and 1 query to avoid
(10 topics: code, math, law, medicine, ...), so the gate compares each query with 60 texts. Queries are
MMLU test questions (from ../shared/data/qa/mmlu, or $MOAI_QA_DIR), each new (no routing cache).

  single   `moai.nodes.gate.decide(mix, query, False)` per query, after a warm-up; the encoder's time
           inside it is measured apart, the rest is the descriptions predictor and the selector.

Target: p50 < 1 ms per query (issue 12). Run from the repository root:
  python bench/gate_descriptions.py [--n 2000] [--out bench/results/gate_descriptions.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

# The gate benchmark's helpers: `python bench/gate_descriptions.py` runs with bench/ on the path.
from gate import mmlu_questions, pool_models, single

from moai.api import mix_runtime
from moai.mix_instructions.load import parse_spec

ROOT = Path(__file__).resolve().parent.parent
TARGET_P50_MS = 1.0

TOPICS = {
    "coder": ("Writes and debugs code in Python, JavaScript and SQL", "Write a Python function that reverses a list"),
    "math": ("Arithmetic, algebra, calculus and word problems", "Solve for x: 3x + 7 = 22"),
    "law": ("Law, contracts, courts and legal reasoning", "Is a verbal contract binding?"),
    "medicine": ("Medicine, anatomy, diseases and treatments", "What are the symptoms of anaemia?"),
    "history": ("History, wars, empires and historical figures", "What caused the fall of Rome?"),
    "science": ("Physics, chemistry and biology", "Why is the sky blue?"),
    "business": ("Economics, accounting, marketing and management", "What is a balance sheet?"),
    "chinese": ("中文问答与写作 Chinese questions and writing", "请介绍一下长城。"),
    "writer": ("Creative writing, poems, stories and letters", "Write a short poem about the sea"),
    "chat": ("Friendly conversation, advice and everyday questions", "Hi! How are you today?"),
}


def pool_spec() -> dict[str, Any]:
    """Return the 10-model mix, each model described by its topic, 4 examples and 1 query to avoid."""
    names = list(TOPICS)
    models = pool_models(names)
    for i, (name, (description, example)) in enumerate(TOPICS.items()):
        models[name] |= {
            "quality": 0.4 + 0.05 * (i % 5),
            "description": description,
            "examples": [example, f"{example}?", f"Please help: {example.lower()}", f"Question: {example}"],
            "avoid": [TOPICS[names[(i + 1) % len(names)]][1]],
        }
    return {
        "name": "gate-descriptions",
        "models": models,
        "gate": {"scorer": "descriptions", "top_k": 3, "objective": {"alpha": 0.2}},
        "steps": [{"kind": "propose", "name": "propose"}],
    }


def measure(n: int, warmup: int) -> dict[str, list[float]]:
    """Return per-query ms: total `decide`, the encoder inside it, and the rest (as `bench/gate.py` times it)."""
    mix = mix_runtime(parse_spec(pool_spec(), "bench/gate_descriptions.py"), usage_db="off")
    return single(mix, mix.scorer.encoder, mmlu_questions()[warmup : warmup + n], warmup)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="queries measured (after 50 of warm-up)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    t = measure(args.n, warmup=50)

    def p(key: str, q: float) -> float:
        return float(np.percentile(t[key], q))

    met = "yes" if p("total", 50) < TARGET_P50_MS else "NO"
    lines = [
        "# The descriptions gate's latency (`python bench/gate_descriptions.py`)",
        "",
        f"10-model pool, 6 texts per model (description, 4 examples, 1 avoid), static encoder `static-minilm`, "
        f"{len(t['total'])} MMLU questions one at a time, each new. Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}.",
        "",
        "| queries | p50 ms | p95 ms | encoder p50 ms | predictor + selector p50 ms | target p50 < 1 ms |",
        "|---:|---:|---:|---:|---:|:---:|",
        f"| {len(t['total'])} | {p('total', 50):.3f} | {p('total', 95):.3f} | {p('encoder', 50):.3f} "
        f"| {p('rest', 50):.3f} | {met} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
