"""Command-line wiring of `moai bench cascade`, `moai calibrate` and `moai dataset split`.

Each handler takes the parsed arguments and returns an exit code: 0 ok, 2 bad input (a one-line reason
that names the flag or file). The work is in `moai.cascade_bench`, `moai.calibrate` and
`moai.scorer.data.split`, imported inside the handlers so that the CLI's help stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_bench_parsers", "add_parsers", "bench_cascade", "calibrate", "dataset_split"]


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _missing(flag: str, paths: list[str]) -> str | None:
    for path in paths:
        if not Path(path).is_file():
            return f"{flag}: no file {path!r}"
    return None


def bench_cascade(args: argparse.Namespace) -> int:
    """Run `moai bench cascade`: train on --train, run every method's mixes on --test, write the report."""
    if (why := _missing("--train", args.train) or _missing("--test", args.test)) is not None:
        return _error(why)
    if not 1 <= args.jobs <= 64:
        return _error(f"--jobs: {args.jobs} is out of range: give 1 to 64")
    if not 1 <= args.concurrency <= 1024:
        return _error(f"--concurrency: {args.concurrency} is out of range: give 1 to 1024")
    from moai.cascade_bench import cascade_bench
    from moai.scorer.benchmark.cascade import format_table

    out = Path(args.out)
    work = out.with_name(out.stem + ".mixes")
    try:
        report = cascade_bench(
            args.train,
            args.test,
            work,
            seed=args.seed,
            concurrency=args.concurrency,
            jobs=args.jobs,
            quiet=args.quiet,
        )
    except (ValueError, OSError, EOFError) as err:
        return _error(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_table(report))
    print(f"\nreport: {out} (the mix file of every point: {work})")
    if args.plot:
        from moai.scorer.benchmark.plot import plot_report

        names = ", ".join(Path(p).name for p in args.test)
        title = f"cascades replayed on {names}: {report['setup']['test_queries']} test queries, seed {args.seed}"
        plot_report(report, args.plot, title=title)
        print(f"plot: {args.plot}")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    """Run `moai calibrate`: choose the mix's thresholds on recorded answers and write a calibrated copy."""
    for flag, value in (("--target-quality", args.target_quality), ("--max-strong-share", args.max_strong_share)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            return _error(f"{flag}: {value} is out of range: give a number from 0 to 1")
    if not 1 <= args.jobs <= 64:
        return _error(f"--jobs: {args.jobs} is out of range: give 1 to 64")
    if (why := _missing("--data", [args.data])) is not None:
        return _error(why)
    from moai.calibrate import calibrate as run
    from moai.calibrate import write_calibrated
    from moai.mix_instructions import resolve_path

    try:
        result = run(
            args.mix,
            args.data,
            target_quality=args.target_quality,
            max_strong_share=args.max_strong_share,
            jobs=args.jobs,
        )
    except (ValueError, OSError, EOFError) as err:  # a MixError goes to main(), which says the same, exit 2
        return _error(str(err))
    source = Path(resolve_path(args.mix))
    out = Path(args.out) if args.out else (source.parent if source.is_file() else Path.cwd())
    if not args.out:
        out = out / f"{source.stem}.calibrated.yaml"
    c = result.chosen
    goal = (
        f"target quality {args.target_quality:g}"
        if args.target_quality is not None
        else f"at most {args.max_strong_share:g} of runs calling {result.strong}"
    )
    what = [f"judges {', '.join(result.judges)}: stop_when.score_at_least {c['threshold']:g}"] if result.judges else []
    if result.gate:
        what.append(f"gate.min_confidence {c['min_confidence']:g}")
    comment = (
        f"Calibrated by moai calibrate on {Path(args.data).name} ({result.queries} queries, replayed), {goal}:\n"
        + "\n".join(what)
        + f"\nmeasured there: quality {c['quality']:.4f}, cost ${c['cost']:.6f}/query, "
        f"{c['strong_share']:.1%} of runs call {result.strong} ({len(result.points)} settings tried)"
    )
    write_calibrated(args.mix, result, out, comment)
    print(comment.replace("\n", "\n  "))
    print(f"wrote {out}")
    return 0


def dataset_split(args: argparse.Namespace) -> int:
    """Run `moai dataset split`: write the train and test parts of a routing/responses file, split by id."""
    from moai.scorer.data.split import split_file

    try:
        n_train, n_test = split_file(args.file, args.out_train, args.out_test, args.test_share, args.seed)
    except (ValueError, OSError, EOFError) as err:
        return _error(str(err))
    print(f"{args.file}: {n_train} ids to {args.out_train}, {n_test} ids to {args.out_test} (seed {args.seed})")
    return 0


def add_bench_parsers(bench_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `bench cascade` on the `moai bench` subparsers."""
    p = bench_sub.add_parser(
        "cascade", help="run cascades whose judges read the answers, as graphs on recorded answers (replay)"
    )
    p.add_argument("--train", nargs="+", required=True, metavar="FILE", help="responses JSONL(.gz) to train on")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE", help="responses JSONL(.gz) to test on")
    p.add_argument("--out", required=True, metavar="REPORT", help="where to write report.json")
    p.add_argument("--plot", metavar="PNG", help="also draw the cost-quality curves to this PNG")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation share and the scorer (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="mix files run at once, one process each (default 2)")
    p.add_argument("--concurrency", type=int, default=32, help="graph runs in flight per process (default 32)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=bench_cascade)


def add_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    dataset_sub: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> None:
    """Register `calibrate` on the `moai` subparsers and `split` on `moai dataset`'s."""
    p = sub.add_parser("calibrate", help="set a mix's judge (and gate) thresholds from recorded answers")
    p.add_argument("mix", help="a mix file or a bundled mix name")
    p.add_argument(
        "--data", required=True, metavar="RESPONSES", help="responses JSONL(.gz) holding each model's answers"
    )
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-quality", type=float, metavar="Q", help="the cheapest thresholds reaching quality Q")
    goal.add_argument(
        "--max-strong-share",
        type=float,
        metavar="S",
        help="the best quality with at most S of runs calling the dearest model",
    )
    p.add_argument("--out", default=None, metavar="FILE", help="where to write the copy (default: MIX.calibrated.yaml)")
    p.add_argument("--jobs", type=int, default=1, help="grid points run at once, one process each (default 1)")
    p.set_defaults(func=calibrate)
    p = dataset_sub.add_parser("split", help="split a routing/responses file into train and test by id")
    p.add_argument("file", help="routing or responses JSONL(.gz)")
    p.add_argument("--test-share", type=float, required=True, help="share of ids that go to test (0 to 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--out-train", required=True, metavar="FILE", help="where the train lines go (.gz: gzip)")
    p.add_argument("--out-test", required=True, metavar="FILE", help="where the test lines go (.gz: gzip)")
    p.set_defaults(func=dataset_split)
