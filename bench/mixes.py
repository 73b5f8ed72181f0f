"""End to end on real questions: every bundled mix, and each local model alone, on MMLU and GSM8K.

Variants: each local model of the bundled pool alone (a one-step mix whose gate may pick only that model,
so the gate, the call records and the graph are the same machinery as the mixes'), then every bundled mix
(`moai.api.load_mix(name)`), all on the embedded local models. They answer the same fixed, seeded sample
of N MMLU and N GSM8K questions (`moai.scorer.data.qa`'s loaders and prompts), graded by exact match: the letter
for MMLU, the number for GSM8K.

Questions run one at a time (MMLU and GSM8K alternating), in the same order for every variant, and the
variants interleave per question (question 1 on every variant, then question 2, ...), so that drift in the
machine's speed hits all alike. Per variant: accuracy (overall, MMLU, GSM8K), mean tokens per query (in + out
over the calls in `result["calls"]`), mean cost per query, p50/p95/mean latency per query (wall clock of
`ainvoke`), mean model calls per query (calls made: ok or error; a refused call is not made), run errors (a
`MixRunError`, or any other exception, counts as a wrong answer) and unparsable answers. Then `routemoa`
against `moa` on the same questions, next to what the RouteMoA paper reports.

Run from the repository root:  python bench/mixes.py [--quick] [--n 40] [--mixes moa,routemoa] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from moai.api import build_mix, load_mix
from moai.errors import MixRunError
from moai.mix_instructions.load import BUNDLED_DIR, bundled_mixes, parse_spec
from moai.scorer.data.qa import (
    extract_choice,
    extract_number,
    grade_choice,
    grade_number,
    gsm8k_prompt,
    load_gsm8k,
    load_mmlu,
    mmlu_prompt,
)

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "qa"
POOL_MIX = "route"  # the bundled mix whose pool the single-model variants use
ALONE = "-alone"
ORDER = ("route", "cascade", "chain", "refine", "panel", "moa", "routemoa")  # cheap to expensive; others after
PAPER = "RouteMoA (2025) reports 89.8% lower cost and 63.6% lower latency than MoA at equal or better accuracy"


@dataclass
class Question:
    id: str
    task: str  # "mmlu" or "gsm8k"
    prompt: str
    gold: str  # MMLU: the gold index 0-3; GSM8K: the gold number


@dataclass
class Outcome:
    variant: str
    question: str
    task: str
    correct: bool
    parsed: bool  # the grader found a letter / a number in the answer
    latency_s: float
    tokens: int
    cost_usd: float
    calls: int  # calls made (ok or error)
    call_errors: int
    error: str | None  # the run's exception, if it failed
    answer: str
    trace: list[str]


def questions(data: Path, n: int, seed: int) -> list[Question]:
    """Return N MMLU and N GSM8K questions, alternating, the same for a given seed on every run."""
    mmlu = [
        Question(row["id"], "mmlu", mmlu_prompt(row), str(row["answer"]))
        for row in load_mmlu(data / "mmlu" / "test", n, seed)
    ]
    gsm8k = [
        Question(row["id"], "gsm8k", gsm8k_prompt(row), row["gold"])
        for row in load_gsm8k(data / "gsm8k" / "test.jsonl", n, seed)
    ]
    mixed = [q for pair in zip(mmlu, gsm8k, strict=True) for q in pair]
    return mixed


def alone_graph(model: str) -> Any:
    """Return a one-step mix on the bundled pool whose gate may pick only `model`."""
    data = yaml.safe_load((BUNDLED_DIR / f"{POOL_MIX}.yaml").read_text(encoding="utf-8"))
    data |= {
        "name": f"{model}{ALONE}",
        "description": f"{model} alone: the gate may pick only it (its declared fallbacks stay).",
        "gate": {"top_k": 1, "candidates": [model]},
        "steps": [{"kind": "propose", "name": "answer"}],
        "aggregate": {"mode": "best"},
    }
    return build_mix(parse_spec(data, f"bench/mixes.py:{model}{ALONE}")).compile(name=data["name"])


def variant_names() -> list[str]:
    pool = yaml.safe_load((BUNDLED_DIR / f"{POOL_MIX}.yaml").read_text(encoding="utf-8"))["models"]
    mixes = bundled_mixes()
    ordered = [m for m in ORDER if m in mixes] + [m for m in mixes if m not in ORDER]
    return [f"{model}{ALONE}" for model in pool] + ordered


def make_graph(name: str) -> Any:
    return alone_graph(name.removesuffix(ALONE)) if name.endswith(ALONE) else load_mix(name)


def grade(question: Question, answer: str) -> tuple[bool, bool]:
    """Return (correct, parsed)."""
    if question.task == "mmlu":
        return grade_choice(answer, int(question.gold)), extract_choice(answer) is not None
    return grade_number(answer, question.gold), extract_number(answer) is not None


async def run_one(name: str, graph: Any, question: Question) -> Outcome:
    start = time.perf_counter()
    error = None
    result: dict[str, Any] = {}
    try:
        result = await graph.ainvoke({"query": question.prompt})
    except MixRunError as err:
        error = f"MixRunError: {err}"
    except Exception as err:  # a bug, not a failed route: counted as an error too, and shown
        error = f"{type(err).__name__}: {err}"
        print(f"  ! {name} on {question.id}: {error}", file=sys.stderr)
    latency = time.perf_counter() - start
    calls = result.get("calls", [])
    answer = str(result.get("answer", ""))
    correct, parsed = grade(question, answer) if error is None else (False, False)
    return Outcome(
        variant=name,
        question=question.id,
        task=question.task,
        correct=correct,
        parsed=parsed,
        latency_s=latency,
        tokens=sum(c["tokens_in"] + c["tokens_out"] for c in calls),
        cost_usd=sum(c["cost_usd"] for c in calls),
        calls=sum(c["status"] != "skipped" for c in calls),
        call_errors=sum(c["status"] == "error" for c in calls),
        error=error,
        answer=answer,
        trace=list(result.get("trace", [])),
    )


async def measure(names: list[str], qs: list[Question], raw: Path | None) -> tuple[dict[str, list[Outcome]], float]:
    """Run every variant on every question, interleaved per question; return the outcomes and the seconds."""
    graphs = {name: make_graph(name) for name in names}
    # Warm-up, not measured: loads each GGUF once (Gemma's is assembled into ~/.cache on first use).
    for name in [n for n in names if n.endswith(ALONE)] or names[:1]:
        await graphs[name].ainvoke({"query": "What is 2 + 2?"})
    outcomes: dict[str, list[Outcome]] = {name: [] for name in names}
    sink = raw.open("w", encoding="utf-8") if raw else None
    began = time.perf_counter()
    try:
        for i, question in enumerate(qs, 1):
            marks = []
            for name in names:
                outcome = await run_one(name, graphs[name], question)
                outcomes[name].append(outcome)
                marks.append(f"{name}:{'E' if outcome.error else 'Y' if outcome.correct else '.'}")
                if sink:
                    sink.write(json.dumps(asdict(outcome)) + "\n")
                    sink.flush()
            elapsed = time.perf_counter() - began
            eta = elapsed / i * (len(qs) - i)
            print(
                f"[{i}/{len(qs)}] {question.id} {elapsed / 60:.1f} min, ~{eta / 60:.1f} min left | {' '.join(marks)}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if sink:
            sink.close()
    return outcomes, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def accuracy(outcomes: list[Outcome], task: str | None = None) -> float:
    chosen = [o for o in outcomes if task is None or o.task == task]
    return sum(o.correct for o in chosen) / len(chosen) if chosen else float("nan")


def summary_rows(outcomes: dict[str, list[Outcome]]) -> list[str]:
    rows = [
        "| variant | accuracy | MMLU | GSM8K | tokens/query | cost/query (USD) | p50 s | p95 s | mean s "
        "| calls/query | run errors | failed calls | unparsable |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, outs in outcomes.items():
        latencies = [o.latency_s for o in outs]
        p50, p95, mean_s = percentile(latencies, 0.5), percentile(latencies, 0.95), statistics.fmean(latencies)
        unparsable = sum(not o.parsed and o.error is None for o in outs)
        rows.append(
            f"| {name} | {accuracy(outs):.1%} | {accuracy(outs, 'mmlu'):.1%} | {accuracy(outs, 'gsm8k'):.1%} "
            f"| {statistics.fmean(o.tokens for o in outs):.0f} | {statistics.fmean(o.cost_usd for o in outs):.6f} "
            f"| {p50:.2f} | {p95:.2f} | {mean_s:.2f} "
            f"| {statistics.fmean(o.calls for o in outs):.2f} | {sum(o.error is not None for o in outs)} "
            f"| {sum(o.call_errors for o in outs)} | {unparsable} |"
        )
    return rows


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "n/a (both $0)" if a == 0 else "n/a"
    r = a / b
    return f"{r:.3f}x ({abs(1 - r):.1%} {'lower' if r <= 1 else 'higher'})"


def comparison(outcomes: dict[str, list[Outcome]]) -> list[str]:
    if "routemoa" not in outcomes or "moa" not in outcomes:
        return []
    rm, moa = outcomes["routemoa"], outcomes["moa"]

    def mean(outs: list[Outcome], attr: str) -> float:
        return statistics.fmean(getattr(o, attr) for o in outs)

    both = sum(a.correct and b.correct for a, b in zip(rm, moa, strict=True))
    only_rm = sum(a.correct and not b.correct for a, b in zip(rm, moa, strict=True))
    only_moa = sum(b.correct and not a.correct for a, b in zip(rm, moa, strict=True))
    rm_lat, moa_lat = [o.latency_s for o in rm], [o.latency_s for o in moa]
    diff = accuracy(rm) - accuracy(moa)
    return [
        "## routemoa vs. moa (same questions, paired)",
        "",
        f"{PAPER}. Our local models are free (cost is $0 for both), so the cost measure here is tokens",
        "processed (in + out, the compute proxy) and latency.",
        "",
        "| measure | routemoa | moa | routemoa / moa |",
        "|---|---:|---:|---:|",
        f"| cost per query (USD) | {mean(rm, 'cost_usd'):.6f} | {mean(moa, 'cost_usd'):.6f} "
        f"| {_ratio(mean(rm, 'cost_usd'), mean(moa, 'cost_usd'))} |",
        f"| tokens per query (compute proxy) | {mean(rm, 'tokens'):.0f} | {mean(moa, 'tokens'):.0f} "
        f"| {_ratio(mean(rm, 'tokens'), mean(moa, 'tokens'))} |",
        f"| latency p50 (s) | {percentile(rm_lat, 0.5):.2f} | {percentile(moa_lat, 0.5):.2f} "
        f"| {_ratio(percentile(rm_lat, 0.5), percentile(moa_lat, 0.5))} |",
        f"| latency mean (s) | {statistics.fmean(rm_lat):.2f} | {statistics.fmean(moa_lat):.2f} "
        f"| {_ratio(statistics.fmean(rm_lat), statistics.fmean(moa_lat))} |",
        f"| model calls per query | {mean(rm, 'calls'):.2f} | {mean(moa, 'calls'):.2f} "
        f"| {_ratio(mean(rm, 'calls'), mean(moa, 'calls'))} |",
        f"| accuracy | {accuracy(rm):.1%} | {accuracy(moa):.1%} | {diff * 100:+.1f} points |",
        "",
        f"Paired over {len(rm)} questions: both right {both}, only routemoa right {only_rm}, "
        f"only moa right {only_moa}.",
        "",
    ]


def machine() -> str:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return (
        f"{platform.platform()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"llama-cpp-python {version('llama-cpp-python')}, langgraph {version('langgraph')}"
    )


def report(outcomes: dict[str, list[Outcome]], n: int, seed: int, seconds: float, command: str) -> str:
    per_task = {task: sum(o.task == task for o in next(iter(outcomes.values()))) for task in ("mmlu", "gsm8k")}
    return "\n".join(
        [
            "# Mixes end to end on MMLU and GSM8K (embedded local models)",
            "",
            "Each local model alone (a one-step mix whose gate may pick only it) and every bundled mix, on the",
            "same fixed sample of questions, graded by exact match (`scorer/data/qa.py`: the letter for MMLU, the",
            "number for GSM8K). One question at a time, variants interleaved per question. Latency is the wall",
            "clock of `ainvoke`; tokens are in + out summed over `result['calls']`; calls/query counts calls made",
            "(ok or error); a run error (no route answered) counts as wrong; unparsable = the grader found no",
            "letter / number in an answer. The pool is SmolLM2-135M-Instruct and Gemma-3-270M (Q4 GGUF on",
            "llama.cpp, greedy, at most 128 tokens a reply as the bundled mixes declare): tiny models, so",
            "accuracy near chance (25% on MMLU) is expected; the figures compare mixes, not models.",
            "",
            f"- Machine: {machine()}",
            f"- Command: `{command}`",
            f"- N: {per_task['mmlu']} MMLU (test, across subjects) + {per_task['gsm8k']} GSM8K (test), seed {seed}",
            f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; measured run took {seconds / 60:.1f} min",
            "",
            *summary_rows(outcomes),
            "",
            *comparison(outcomes),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="questions per task (MMLU and GSM8K each); default 40")
    parser.add_argument("--quick", action="store_true", help="a smoke run, N=3 (writes no file unless --out)")
    parser.add_argument("--mixes", help="comma-separated variants to run (default: all), e.g. smol-alone,moa,routemoa")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question sample")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the qa data folder (default: {DATA})")
    parser.add_argument("--out", type=Path, help="where to write the table (default: bench/results/mixes.md)")
    parser.add_argument("--raw", type=Path, help="also write every outcome, one JSON line each, here")
    args = parser.parse_args()
    names = variant_names()
    if args.mixes:
        chosen = [m.strip() for m in args.mixes.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in names]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        names = [m for m in names if m in chosen]
    n = 3 if args.quick else args.n
    if n < 1:
        parser.error("--n must be at least 1")
    if not args.data.is_dir():
        parser.error(f"no data at {args.data} (see the shared data's README); pass --data")
    qs = questions(args.data, n, args.seed)
    print(f"{len(names)} variants x {len(qs)} questions: {', '.join(names)}", file=sys.stderr)
    outcomes, seconds = asyncio.run(measure(names, qs, args.raw))
    text = report(outcomes, n, args.seed, seconds, "python " + " ".join(["bench/mixes.py", *sys.argv[1:]]))
    print(text)
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / "mixes.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
