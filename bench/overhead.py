"""The framework's overhead: a compiled moai mix against the same Mixture-of-Agents written by hand.

Four variants answer the same queries with the same `ScriptedChatModel` instances (3 proposers that
answer concurrently, then 1 aggregator that synthesises), at a model latency of 0 ms and 50 ms a call:

  plain      `asyncio.gather` over the proposers, then the aggregator: no framework at all.
  langgraph  a minimal hand-written StateGraph of the same topology (router -Send-> propose x3 ->
             deferred aggregate): LangGraph's own loop, the floor under any LangGraph-based framework.
  moai       the mix `MIX` below compiled with `build_mix(spec, usage_db="off").compile()`, run by
             `ainvoke({"query": q})`.
  moai+usage the same with the usage monitor on (a SQLite database in a temporary folder).

The moai graph gets the benchmark's model instances by a swap, in this process only, of the `fake`
provider in `moai.providers.PROVIDERS`. After a warm-up the variants run interleaved (ABCABC...);
per variant the table gives the mean and median time per query, the ratio to plain asyncio, and at
0 ms the cost per node executed (a query runs 5 nodes: gate/router, 3 proposer tasks, aggregate).

Run from the repository root:  python bench/overhead.py [--quick] [--n0 200] [--n50 40] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import yaml
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

from moai import providers
from moai.api import build_mix
from moai.mix_instructions.load import parse_spec
from moai.nodes.prompts import ANSWER, aggregate_messages
from moai.providers.fake import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent

MIX = """
name: overhead
description: Classic single-layer Mixture-of-Agents on fake models, to measure the framework's overhead.
models:
  p1: {provider: fake, model: p1}
  p2: {provider: fake, model: p2}
  p3: {provider: fake, model: p3}
  agg: {provider: fake, model: agg}
steps:
  - {kind: propose, name: propose, models: [p1, p2, p3]}
aggregate: {mode: synthesize, model: agg}
"""
PROPOSERS = ("p1", "p2", "p3")
NODES_PER_QUERY = 5  # gate (router), 3 proposer tasks, aggregate; checked against moai's trace
VARIANTS = ("plain", "langgraph", "moai", "moai+usage")
Models = dict[str, BaseChatModel]
Variant = Callable[[str], Awaitable[str]]


def propose_msgs(query: str) -> list[BaseMessage]:
    return [SystemMessage(ANSWER), HumanMessage(query)]


def aggregate_msgs(query: str, answers: list[str]) -> list[BaseMessage]:
    return aggregate_messages(query, answers)


def plain_moa(models: Models) -> Variant:
    async def run(query: str) -> str:
        replies = await asyncio.gather(*(models[p].ainvoke(propose_msgs(query)) for p in PROPOSERS))
        return (await models["agg"].ainvoke(aggregate_msgs(query, [r.text for r in replies]))).text

    return run


class State(TypedDict, total=False):
    query: str
    proposals: Annotated[list[str], operator.add]
    answer: str


class Task(TypedDict):
    query: str
    model: str


def langgraph_moa(models: Models) -> Variant:
    async def router(state: State) -> Command[Any]:
        return Command(goto=[Send("propose", Task(query=state["query"], model=p)) for p in PROPOSERS])

    async def propose(task: Task) -> dict[str, Any]:
        return {"proposals": [(await models[task["model"]].ainvoke(propose_msgs(task["query"]))).text]}

    async def aggregate(state: State) -> dict[str, Any]:
        return {"answer": (await models["agg"].ainvoke(aggregate_msgs(state["query"], state["proposals"]))).text}

    builder = StateGraph(State)
    builder.add_node("router", router, destinations=("propose",))
    builder.add_node("propose", propose)
    builder.add_node("aggregate", aggregate, defer=True)
    builder.add_edge(START, "router")
    builder.add_edge("propose", "aggregate")
    builder.add_edge("aggregate", END)
    graph = builder.compile()

    async def run(query: str) -> str:
        return str((await graph.ainvoke({"query": query}))["answer"])

    return run


@contextmanager
def fake_provider(models: Models) -> Iterator[None]:
    """Make the `fake` provider hand out the benchmark's instances, by name."""
    saved = providers.PROVIDERS["fake"]
    providers.PROVIDERS["fake"] = lambda name, spec: models[name]
    try:
        yield
    finally:
        providers.PROVIDERS["fake"] = saved


def moai_moa(models: Models, usage_db: str) -> Variant:
    graph = build_mix(parse_spec(yaml.safe_load(MIX), "bench/overhead.py:MIX"), usage_db=usage_db).compile()

    async def run(query: str) -> str:
        result = await graph.ainvoke({"query": query})
        assert len(result["trace"]) == NODES_PER_QUERY, result["trace"]
        assert [c["status"] for c in result["calls"]] == ["ok"] * 4, result["calls"]
        return str(result["answer"])

    return run


async def measure(delay_s: float, n: int, warmup: int, usage_db: str) -> dict[str, list[float]]:
    """Return the milliseconds of each query per variant, the variants interleaved."""
    models: Models = {
        name: ScriptedChatModel(replies=[f"{name}: {{query}}"], delay_s=delay_s) for name in (*PROPOSERS, "agg")
    }
    with fake_provider(models):
        variants = {
            "plain": plain_moa(models),
            "langgraph": langgraph_moa(models),
            "moai": moai_moa(models, "off"),
            "moai+usage": moai_moa(models, usage_db),
        }
        answers = {name: await run("warm-up") for name, run in variants.items()}
        # The variants compute the same thing (each aggregator call draws its own delimiter nonce).
        same = {re.sub(r'nonce="[0-9a-f]+"', "", answer) for answer in answers.values()}
        assert len(same) == 1, answers
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for i in range(warmup + n):
            for name in VARIANTS:
                start = time.perf_counter()
                await variants[name](f"Question {i}: what is {i} times {i + 1}?")
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
    return times


def report(results: dict[float, dict[str, list[float]]], command: str) -> str:
    rows = [
        "| latency/call | variant | queries | mean ms | p50 ms | mean / plain | p50 / plain | ms/query over plain "
        "| ms/node over plain (0 ms) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for delay_s, times in results.items():
        mean = {v: statistics.fmean(times[v]) for v in VARIANTS}
        p50 = {v: statistics.median(times[v]) for v in VARIANTS}
        for v in VARIANTS:
            over = mean[v] - mean["plain"]
            per_node = f"{over / NODES_PER_QUERY:.3f}" if delay_s == 0 and v != "plain" else ""
            rows.append(
                f"| {delay_s * 1000:g} ms | {v} | {len(times[v])} | {mean[v]:.2f} | {p50[v]:.2f} | "
                f"{mean[v] / mean['plain']:.2f}x | {p50[v] / p50['plain']:.2f}x | "
                f"{'' if v == 'plain' else f'{over:.2f}'} | {per_node} |"
            )
        if delay_s == 0:
            floor = (mean["langgraph"] - mean["plain"]) / NODES_PER_QUERY
            extra = (mean["moai"] - mean["langgraph"]) / NODES_PER_QUERY
            notes.append(
                f"- At 0 ms, per node executed ({NODES_PER_QUERY} a query): LangGraph's own loop costs {floor:.3f} ms "
                f"(the floor); moai adds {extra:.3f} ms on top "
                f"(moai / langgraph = {mean['moai'] / mean['langgraph']:.2f}x)."
            )
            notes.append(
                f"- The usage monitor (every call and run recorded in SQLite by a writer thread) costs "
                f"{mean['moai+usage'] - mean['moai']:.2f} ms a query at 0 ms "
                f"(moai+usage / moai = {mean['moai+usage'] / mean['moai']:.2f}x)."
            )
        else:
            for v in ("moai", "moai+usage"):
                ratio = mean[v] / mean["plain"]
                verdict = "met" if ratio <= 1.1 else "NOT met"
                notes.append(
                    f"- At {delay_s * 1000:g} ms a call: {v} / plain asyncio = {ratio:.3f}x (mean), "
                    f"{p50[v] / p50['plain']:.3f}x (p50); target <= 1.1x {verdict}."
                )
    machine = (
        f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"langgraph {version('langgraph')}, langchain-core {version('langchain-core')}"
    )
    return "\n".join(
        [
            "# Framework overhead: moai vs. hand-written LangGraph vs. plain asyncio",
            "",
            "Classic single-layer Mixture-of-Agents (3 concurrent proposers, 1 synthesising aggregator) on the same",
            "`ScriptedChatModel` instances; variants interleaved per query, after a warm-up. Ratios are the message;",
            "absolute times depend on the (noisy) machine.",
            "",
            f"- Machine: {machine}",
            f"- Command: `{command}`",
            "",
            *rows,
            "",
            *notes,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (writes no file unless --out)")
    parser.add_argument("--n0", type=int, default=200, help="queries per variant at 0 ms a call")
    parser.add_argument("--n50", type=int, default=40, help="queries per variant at 50 ms a call")
    parser.add_argument("--out", type=Path, help="where to write the table (default: bench/results/overhead.md)")
    args = parser.parse_args()
    n0, n50, warmup = (20, 5, 3) if args.quick else (args.n0, args.n50, 20)
    os.environ.pop("MOAI_USAGE_DB", None)  # it would override the usage databases chosen here
    with tempfile.TemporaryDirectory() as folder:
        usage_db = str(Path(folder) / "usage.db")
        results = {
            0.0: asyncio.run(measure(0.0, n0, warmup, usage_db)),
            0.05: asyncio.run(measure(0.05, n50, max(warmup // 4, 1), usage_db)),
        }
    text = report(results, "python " + " ".join(["bench/overhead.py", *sys.argv[1:]]))
    print(text)
    out = args.out or (None if args.quick else ROOT / "bench" / "results" / "overhead.md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
