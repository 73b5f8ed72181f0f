"""Command-line wiring of the usage monitor: `moai usage report|export` and `moai feedback`.

`add_parsers(sub)` registers the commands on the `moai` parser's subparsers; each leaf sets `func`, which
takes the parsed arguments and returns an exit code (0 ok, 2 bad input with a one-line reason). The
report's modules (and matplotlib, for `--html`) are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moai.usage.store import default_db, resolve_db

__all__ = ["add_parsers", "feedback", "usage_export", "usage_report"]


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _database(args: argparse.Namespace) -> str | None:
    """Return the database to read, or None after printing why there is none."""
    db = resolve_db(args.db)
    if db is None:
        _error("the usage monitor is off (MOAI_USAGE_DB=off): there is no usage database to read")
        return None
    if not db.startswith(("postgresql://", "postgres://")) and not Path(db).is_file():
        _error(f"no usage database at {db}: run a mix first (moai run MIX QUERY), or name one with --db")
        return None
    return db


def usage_report(args: argparse.Namespace) -> int:
    """Run `moai usage report`: print the tables; with `--html`, also write the page with charts."""
    from moai.usage.report import build_report, format_text, read_usage, write_html

    db = _database(args)
    if db is None:
        return 2
    report = build_report(read_usage(db, args.since))
    print(format_text(report))
    if args.html:
        path = write_html(report, args.html)
        print(f"\nhtml: {path}")
    return 0


def usage_export(args: argparse.Namespace) -> int:
    """Run `moai usage export`: write the runs that got feedback as routing JSONL, or the recorded answers."""
    from moai.usage.export import export_feedback

    db = _database(args)
    if db is None:
        return 2
    written = export_feedback(db, args.out, args.since, responses=args.responses)
    where = "standard output" if args.out == "-" else args.out
    kind = "response" if args.responses else "routing"
    print(f"wrote {written} {kind} lines to {where}", file=sys.stderr)
    if not written and args.responses:
        print(
            "no answer was recorded in this period: set `usage: {record_answers: true}` in the mix "
            "(answers to sensitive queries are never recorded)",
            file=sys.stderr,
        )
    elif not written:
        print("no run in this period has feedback yet: add some with `moai feedback RUN_ID SCORE`", file=sys.stderr)
    return 0


def feedback(args: argparse.Namespace) -> int:
    """Run `moai feedback RUN_ID SCORE`: store a user's score for a run."""
    from moai.usage import record_feedback

    try:
        record_feedback(args.run_id, args.score, args.comment, db=args.db)
    except KeyError as err:
        return _error(str(err.args[0]) if err.args else f"no run '{args.run_id}'")
    except ValueError as err:
        return _error(str(err))
    print(f"recorded feedback {args.score:g} for run {args.run_id}")
    return 0


def _db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        help=f"usage database: a SQLite file or a postgresql:// URL (default {default_db()}; "
        "$MOAI_USAGE_DB, when set, wins, as for the mixes)",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `usage report|export` and `feedback` on the `moai` parser's subparsers."""
    from moai.usage.report import since_arg

    since_help = (
        "only runs started since then: an ISO date/time (2025-06-01, 2025-06-01T09:30) or an age (30m, 24h, 7d)"
    )
    usage = sub.add_parser("usage", help="what the mixes cost and how well they answered (the usage monitor)")
    usage_sub = usage.add_subparsers(dest="usage_command", required=True)
    p = usage_sub.add_parser(
        "report", help="tables per model, mix and A/B arm: calls, tokens, cost, latency, CO2e, feedback, savings"
    )
    p.add_argument("--since", type=since_arg, default=None, metavar="WHEN", help=since_help)
    p.add_argument(
        "--html", type=Path, default=None, metavar="FILE", help="also write a self-contained page with charts"
    )
    _db_option(p)
    p.set_defaults(func=usage_report)

    p = usage_sub.add_parser(
        "export",
        help="write the runs users scored as routing JSONL, for `moai scorer train`; or, with --responses, "
        "the recorded answers, for `provider: replay`",
        description="Write routing JSONL ({id, prompt, task, model, score, cost}) from the usage database: one "
        "line per (run, model that answered it); score = the run's mean feedback, task = the mix. Feedback is "
        "the only score the database holds, so only runs with feedback are exported (--feedback, the default). "
        "With --responses: the recorded answers as a responses file (the same lines plus response, tokens_in, "
        "tokens_out; cost = that call's; score = the run's feedback or null), every recorded answer exported.",
    )
    p.add_argument(
        "--feedback",
        action="store_true",
        default=True,
        help="export the runs that got feedback, scored by it (the default)",
    )
    p.add_argument(
        "--responses",
        action="store_true",
        help="write the recorded answers instead, as a responses file for `provider: replay` (shadow evaluation): "
        "one line per (run, model whose answer was recorded), with response, cost, tokens, and score = the run's "
        "mean feedback or null; needs the mix's `usage: {record_answers: true}`",
    )
    p.add_argument(
        "--out", default="-", metavar="FILE", help="JSONL file to write (replaced; default: standard output)"
    )
    p.add_argument("--since", type=since_arg, default=None, metavar="WHEN", help=since_help)
    _db_option(p)
    p.set_defaults(func=usage_export)

    p = sub.add_parser("feedback", help="score a run's answer, 0 (bad) to 1 (good)")
    p.add_argument("run_id", help="the run's id (the last line of `moai run`, or `run.run_id` in a mix's output)")
    p.add_argument("score", type=float, help="how good the answer was, in [0, 1]")
    p.add_argument("--comment", default=None, metavar="TEXT", help="free text kept with the score")
    _db_option(p)
    p.set_defaults(func=feedback)
