"""The `moai` command: validate, run, serve, draw, list and describe mixes.

Exit codes: 0 ok, 1 the run failed (every route of the mix failed), 2 bad input (a one-line reason).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

__all__ = ["main"]


def _validate(args: argparse.Namespace) -> int:
    from moai.api import build_mix
    from moai.errors import MixError, ProviderError
    from moai.mix_instructions import MixSpec, load_any

    failed = 0
    for path in args.paths:
        try:
            spec = load_any(path)
            build_mix(path)
        except (MixError, ProviderError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        if isinstance(spec, MixSpec):
            print(f"ok: {path} ({spec.name}: {len(spec.models)} models, {len(spec.steps)} steps)")
        else:
            print(f"ok: {path} ({spec.name}: A/B split of {', '.join(spec.split.arms)} by {spec.split.by})")
    return 2 if failed else 0


def _run(args: argparse.Namespace) -> int:
    if args.stream and args.json:
        # --json promises one JSON document on stdout; its "answer" already holds what --stream would print.
        print("error: --stream and --json cannot be combined: --json prints one JSON document", file=sys.stderr)
        return 2
    if not args.query.strip():
        print("error: QUERY: the question is empty: give the text to answer", file=sys.stderr)
        return 2
    _check_settings(args)
    result = asyncio.run(_answer(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not args.stream:
        print(result["answer"])
    print()
    print(_report(result))
    return 0


def _check_settings(args: argparse.Namespace) -> None:
    """Validate --budget and --top-k exactly as the mix file's own values: merged over it, through the schema.

    For an A/B split, over each arm's mix (an arm pinned to one model keeps its single pick, as at run time).

    Raises:
        MixError: A value the file could not hold; the source names the file and the flag.
    """
    from moai.graphs.split import arm_spec
    from moai.mix_instructions import MixSpec, load_any, resolve_path
    from moai.mix_instructions.load import override_spec

    flags = {"--budget": args.budget, "--top-k": args.top_k}
    given = " ".join(f"{flag} {value:g}" for flag, value in flags.items() if value is not None)
    if not given:
        return
    spec = load_any(args.mix, args.override)
    source = " + ".join([str(resolve_path(args.mix)), *map(str, args.override)])
    mixes = [(spec, source, False)] if isinstance(spec, MixSpec) else []
    if not isinstance(spec, MixSpec):
        for arm in spec.split.arms:
            mix, mix_source = arm_spec(spec, arm, source)
            mixes.append((mix, mix_source, spec.split.arms[arm].model is not None))
    for mix, mix_source, pinned in mixes:
        gate: dict[str, Any] = {}
        if args.budget is not None:
            gate["objective"] = {"budget_usd": args.budget}
        if args.top_k is not None and not pinned:
            gate["top_k"] = args.top_k
        override_spec(mix, {"gate": gate}, f"{mix_source} with {given}")


async def _answer(args: argparse.Namespace) -> dict[str, Any]:
    """Run the mix once; with `--thread`, in a conversation kept in the SQLite checkpointer."""
    from moai.api import load_mix, threads_db
    from moai.nodes.context import MixContext

    context = MixContext(budget_usd=args.budget, top_k=args.top_k, user_id=args.user)
    state: dict[str, Any] = {"query": args.query, "sensitive": args.sensitive}
    config: RunnableConfig = {}
    async with contextlib.AsyncExitStack() as stack:
        saver = None
        if args.thread is not None:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = threads_db()
            path.parent.mkdir(parents=True, exist_ok=True)
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            config = {"configurable": {"thread_id": args.thread}}
        graph = load_mix(args.mix, args.override, checkpointer=saver)
        if args.stream:
            return await _stream(graph, state, context, config)
        return dict(await graph.ainvoke(state, config, context=context))


async def _stream(graph: Any, state: dict[str, Any], context: Any, config: RunnableConfig) -> dict[str, Any]:
    """Print the aggregator's tokens as they come (or the final answer when no model writes it)."""
    from langchain_core.messages import AIMessageChunk

    result: dict[str, Any] = {}
    printed = False
    async for mode, chunk in graph.astream(state, config, context=context, stream_mode=["messages", "values"]):
        if mode == "messages":
            message, meta = chunk
            # Only the aggregator's streamed tokens: whole messages here are the state's history.
            if meta.get("langgraph_node") == "aggregate" and isinstance(message, AIMessageChunk) and message.text:
                print(message.text, end="", flush=True)
                printed = True
        else:
            result = chunk
    print("" if printed else result["answer"])
    return {key: result[key] for key in ("answer", "models_used", "calls", "trace", "run")}


def _report(result: dict[str, Any]) -> str:
    rows = [("node", "model", "status", "tokens in", "tokens out", "latency s", "cost $")]
    for call in result["calls"]:
        approx = "<=" if call["usage_estimated"] else ""  # the server sent no usage: an upper bound
        rows.append(
            (
                call["node"],
                call["model"] + (f" (for {call['fallback_for']})" if call["fallback_for"] else ""),
                call["status"] if call["status"] == "ok" else f"{call['status']}: {call['error']}",
                approx + str(call["tokens_in"]),
                approx + str(call["tokens_out"]),
                f"{call['latency_s']:.2f}",
                f"{call['cost_usd']:.6f}",
            )
        )
    calls = result["calls"]
    rows.append(
        (
            "total",
            ", ".join(result["models_used"]),
            f"{len(calls)} calls",
            str(sum(c["tokens_in"] for c in calls)),
            str(sum(c["tokens_out"] for c in calls)),
            f"{sum(c['latency_s'] for c in calls):.2f}",
            f"{sum(c['cost_usd'] for c in calls):.6f}",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    run = f"run: {result['run']['run_id']} (moai feedback {result['run']['run_id']} SCORE)"
    return "\n".join([f"path: {' -> '.join(result['trace'])}", *lines, run])


def _graph(args: argparse.Namespace) -> int:
    from moai.api import load_mix

    drawing = load_mix(args.mix).get_graph()
    print(drawing.draw_mermaid())
    if args.png:
        dot = shutil.which("dot")
        if dot is None:
            print("error: --png needs Graphviz's dot (apt-get install graphviz)", file=sys.stderr)
            return 2
        lines = ["digraph mix {", "  rankdir=TB; node [shape=box, style=rounded, fontname=Helvetica];"]
        lines += [f'  "{node}";' for node in drawing.nodes]
        lines += [
            f'  "{e.source}" -> "{e.target}"' + (" [style=dashed]" if e.conditional else "") + ";"
            for e in drawing.edges
        ]
        subprocess.run([dot, "-Tpng", "-o", str(args.png)], input="\n".join([*lines, "}"]), text=True, check=True)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from moai.mix_instructions import bundled_mixes, load_any

    for name in bundled_mixes():
        print(f"{name:10} {load_any(name).description}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from moai.mix_instructions import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _dataset_build(args: argparse.Namespace) -> int:
    from moai.dataset import build_routing_data, load_questions
    from moai.mix_instructions import load_spec

    spec = load_spec(args.mix, args.override)
    questions = [q for path in args.qa for q in load_questions(path, args.n, args.seed)]
    written = asyncio.run(build_routing_data(spec, questions, args.out, args.models))
    print(
        f"wrote {written} lines to {args.out} ({len(questions)} questions x {len(args.models or spec.models)} models)"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"error: --port: {args.port} is not a port: give 0 to 65535", file=sys.stderr)
        return 2
    if not 1 <= args.workers <= 64:
        print(f"error: --workers: {args.workers} is out of range: give 1 to 64", file=sys.stderr)
        return 2
    from moai.serve import serve

    serve(args.host, args.port, args.mixes, args.workers, args.keys)
    return 0


def _keys_add(args: argparse.Namespace) -> int:
    import math

    from moai.serve.keys import MAX_DAILY_USD, MAX_RPM, add_key

    daily, rpm = args.daily_usd, args.rpm
    if daily is not None and not (math.isfinite(daily) and 0 <= daily <= MAX_DAILY_USD):
        print(f"error: --daily-usd: {daily} is out of range: give 0 to {MAX_DAILY_USD:.0e}", file=sys.stderr)
        return 2
    if rpm is not None and not 1 <= rpm <= MAX_RPM:
        print(f"error: --rpm: {rpm} is out of range: give 1 to {MAX_RPM}", file=sys.stderr)
        return 2
    key = add_key(args.file, args.id, daily, rpm)
    print(key)  # the one time the key is shown: the file keeps its hash only
    print(f"added key '{args.id}' to {args.file}: give the key above to its user; it is not stored", file=sys.stderr)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bad input (its subcommands inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moai", description="Mixture-of-AI: declarative mixes of LLMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check mix files: schema, references, graph shape")
    p.add_argument("paths", nargs="+", help="mix files (.yaml, .yml, .json) or bundled mix names")
    p.set_defaults(func=_validate)
    p = sub.add_parser("run", help="answer a query with a mix")
    p.add_argument("mix", help="a mix file or a bundled mix name")
    p.add_argument("query", help="the question")
    p.add_argument("--sensitive", action="store_true", help="keep the query within the mix's private tiers")
    p.add_argument("--budget", type=float, default=None, help="most US dollars to spend (overrides the mix)")
    p.add_argument("--top-k", type=int, default=None, help="how many models the gate picks (overrides the mix)")
    p.add_argument("--stream", action="store_true", help="print the final answer token by token")
    p.add_argument("--thread", default=None, help="continue this conversation (kept in ~/.local/share/moai/threads.db)")
    p.add_argument("--user", default=None, help="who asks (recorded; an A/B split by user keys on it)")
    p.add_argument(
        "--override", action="append", default=[], metavar="FILE", help="merge this file over the mix (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=_run)
    p = sub.add_parser("graph", help="draw a mix's graph (Mermaid; PNG with --png)")
    p.add_argument("mix", help="a mix file or a bundled mix name")
    p.add_argument("--png", type=Path, default=None, help="also write a PNG here (needs Graphviz)")
    p.set_defaults(func=_graph)
    p = sub.add_parser("dataset", help="build routing data for a pool")
    dataset = p.add_subparsers(dest="dataset_command", required=True)
    p = dataset.add_parser("build", help="run every model of a mix on labelled questions, grade, write JSONL")
    p.add_argument("--mix", required=True, help="the mix whose pool to run (a file or a bundled name)")
    p.add_argument("--qa", nargs="+", required=True, help="MMLU folders of subject CSVs and/or GSM8K .jsonl files")
    p.add_argument("--out", required=True, help="routing JSONL to append to (an interrupted build resumes)")
    p.add_argument("--n", type=int, default=100, help="questions sampled from each --qa source")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--models", nargs="+", default=None, help="only these models of the pool")
    p.add_argument("--override", action="append", default=[], metavar="FILE", help="merge this file over the mix")
    p.set_defaults(func=_dataset_build)
    from moai.cli.bench import add_parsers as add_bench_parsers

    add_bench_parsers(sub, dataset)  # `moai calibrate` and `moai dataset split`
    from moai.cli.scorer import add_parsers

    add_parsers(sub)  # `moai scorer train|add-model` and `moai bench routing`
    from moai.cli.usage import add_parsers as add_usage_parsers

    add_usage_parsers(sub)  # `moai usage report|export` and `moai feedback`
    p = sub.add_parser("serve", help="serve the mixes over an OpenAI-compatible HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--mixes", default=None, metavar="DIR", help="a folder of mix files served besides the bundled ones")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--keys", default=None, metavar="FILE", help="a keys file (moai keys add): every request needs a bearer key"
    )
    p.set_defaults(func=_serve)
    p = sub.add_parser("keys", help="manage the bearer keys of moai serve")
    keys = p.add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("add", help="make a new key, print it once, add its hash to a keys file")
    p.add_argument("--id", required=True, help="the key's id (recorded in every usage row of its requests)")
    p.add_argument("--daily-usd", type=float, default=None, help="most US dollars its runs may cost a day (UTC)")
    p.add_argument("--rpm", type=int, default=None, help="most requests a minute")
    p.add_argument("--file", required=True, help="the keys file (.yaml, .yml or .json; made if missing)")
    p.set_defaults(func=_keys_add)
    p = sub.add_parser("list", help="list the bundled mixes")
    p.set_defaults(func=_list)
    p = sub.add_parser("schema", help="print the JSON Schema of mix files")
    p.add_argument("--out", default=None, help="write it to this file instead")
    p.set_defaults(func=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit code."""
    from moai.errors import MixError, MixRunError, ProviderError

    args = _parser().parse_args(argv)  # a flag argparse refuses exits 2 here, as argparse always does
    try:
        code: int = args.func(args)
    except (MixError, ProviderError) as err:  # a ProviderError is raised while a mix is built: a setup mistake
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MixRunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
