"""Command-line wiring of the scorer: `moai bench routing`, `moai scorer train|add-model|universe`.

`add_parsers(sub)` registers the commands on the `moai` parser's subparsers; each leaf sets `func`, which
takes the parsed arguments and returns an exit code (0 ok, 2 bad input with a one-line reason).
Everything heavy (numpy work, torch, sentence-transformers, matplotlib) is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "add_parsers",
    "bench_routing",
    "scorer_add_model",
    "scorer_train",
    "scorer_train_verifier",
    "scorer_universe",
]

VERIFIER_ENCODERS = ("static", "minilm", "none")
"""`--encoder` of train-verifier: the static encoder (default), MiniLM itself, or none (no kNN prior)."""


def _encoder(name: str, truncate: str) -> Any:
    from moai.scorer.encoders import make_encoder

    return make_encoder(name, truncate="left" if truncate == "left" else "right", threads=2)


def _encode(encoder: Any, data: Any, quiet: bool) -> tuple[Any, float]:
    """Encode each query of the data (its prompt less the few-shot blocks its task shares); cached."""
    from moai.scorer.data.texts import query_texts
    from moai.scorer.encoders.sentence import cached_encode

    start = time.perf_counter()
    emb = cached_encode(encoder, query_texts(data.prompts, data.tasks), progress=not quiet)
    return emb, time.perf_counter() - start


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def bench_routing(args: argparse.Namespace) -> int:
    """Run `moai bench routing`: train every method, evaluate on test, write report (and plot)."""
    from moai.scorer.benchmark.evaluate import format_table, run_benchmark
    from moai.scorer.data.routing import load, split_rows
    from moai.scorer.predictors.descriptions import read_domains

    quiet = bool(args.quiet)
    try:
        start = time.perf_counter()
        data = load([*args.train, *args.test])
        train_rows, test_rows = split_rows(data, args.train, args.test, args.seed)
        load_s = time.perf_counter() - start
        _say(
            quiet,
            f"loaded {len(data)} queries x {len(data.models)} models in {load_s:.1f}s: "
            f"{len(train_rows)} train, {len(test_rows)} test",
        )
        methods, descriptions = _zero_shot(args, data.models, quiet)
        encoder = _encoder(args.encoder, args.truncate)
        emb, encode_s = _encode(encoder, data, quiet)
        _say(quiet, f"embeddings ready in {encode_s:.1f}s ({encoder.name})")
        setup = {
            "train_files": [str(p) for p in args.train],
            "test_files": [str(p) for p in args.test],
            "encoder": encoder.name,
            **({"descriptions": str(args.descriptions)} if descriptions is not None else {}),
            "load_s": round(load_s, 2),
            "encode_s": round(encode_s, 2),
        }

        def done(name: str, _: Any) -> None:
            _say(quiet, f"  {name} done")

        report = run_benchmark(
            data.subset(train_rows),
            data.subset(test_rows),
            emb[train_rows],
            emb[test_rows],
            methods=methods,
            seed=args.seed,
            progress=not quiet,
            setup=setup,
            on_method=done,
            descriptions=descriptions,
            encoder=encoder,
            domains=read_domains(args.descriptions) if descriptions is not None else None,
        )
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(format_table(report))
    print(f"\nreport: {out}")
    if args.plot:
        from moai.scorer.benchmark.plot import plot_online, plot_report

        names = ", ".join(Path(p).name for p in dict.fromkeys([*args.train, *args.test]))
        plot_report(report, args.plot, title=f"{names}: {len(test_rows)} test queries, seed {args.seed}")
        print(f"plot: {args.plot}")
        curves = Path(args.plot).with_name(Path(args.plot).stem + "_online.png")
        if plot_online(report, curves, title=f"{names}: online replays of {len(test_rows)} test queries"):
            print(f"plot: {curves}")
    return 0


def _zero_shot(args: argparse.Namespace, models: Sequence[str], quiet: bool) -> tuple[list[str], Any]:
    """Return the methods to run and the descriptions of the zero-shot method (None when it does not run).

    By default 'descriptions' runs only where the descriptions file describes every model of the data;
    named with `--methods`, a model it lacks is an error.
    """
    from moai.scorer.benchmark.evaluate import ROUTERDC_DESCRIPTIONS
    from moai.scorer.predictors.descriptions import read_descriptions
    from moai.scorer.predictors.registry import METHODS

    methods = list(args.methods or METHODS)
    described = [m for m in methods if m == "descriptions" or m.endswith("_described")]
    if not described:
        return methods, None
    if args.descriptions is None:
        args.descriptions = str(ROUTERDC_DESCRIPTIONS)
    descriptions = read_descriptions(args.descriptions)
    if missing := [m for m in models if m not in descriptions]:
        if args.methods:
            raise ValueError(f"{args.descriptions} describes no {', '.join(missing)} (method '{described[0]}')")
        _say(quiet, f"descriptions skipped: {args.descriptions} does not describe {', '.join(missing)}")
        methods.remove("descriptions")
        return methods, None
    return methods, descriptions


def _held_out(predictor: Any, test: Any, test_emb: Any, train_costs: Any) -> dict[str, Any]:
    from moai.scorer.benchmark.evaluate import best_single, method_report, oracle
    from moai.scorer.objective import model_costs

    pred = predictor.predict_embeddings(test_emb, tasks=test.tasks)
    reference, ceiling = best_single(test), oracle(test)
    costs = model_costs(test.costs)
    entry = method_report(pred, test, train_costs, reference, ceiling, list(costs) if costs is not None else [])
    keep = ("quality", "cost", "gap_recovered", "top1_hit", "top3_hit", "top3_agree", "aiq")
    metrics = {k: entry[k] for k in keep}
    metrics["cost_ratio_at_best_single_quality"] = entry["cost_ratio_at_best_single_quality"]
    metrics["best_single"] = reference
    metrics["oracle"] = ceiling
    metrics["test_queries"] = len(test)
    return metrics


def scorer_train(args: argparse.Namespace) -> int:
    """Run `moai scorer train`: fit one method on the data's train split, report held-out metrics, save."""
    from moai.scorer.checkpoint import save
    from moai.scorer.data.routing import load, split_rows
    from moai.scorer.objective import model_costs
    from moai.scorer.predictors.registry import make

    quiet = bool(args.quiet)
    try:
        data = load(args.data)
        train_rows, test_rows = split_rows(data, args.data, args.data, args.seed)
        encoder = _encoder(args.encoder, args.truncate)
        emb, encode_s = _encode(encoder, data, quiet)
        train, test = data.subset(train_rows), data.subset(test_rows)
        predictor = make(args.method, encoder=encoder)
        start = time.perf_counter()
        predictor.fit(
            emb[train_rows],
            train.scores,
            train.models,
            args.seed,
            tasks=train.tasks,
            costs=train.costs,
            progress=not quiet,
        )
        train_s = time.perf_counter() - start
        metrics = _held_out(predictor, test, emb[test_rows], model_costs(train.costs))
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics.update(train_s=round(train_s, 2), encode_s=round(encode_s, 2))
    info = {"files": [str(p) for p in args.data], "hash": train.fingerprint(), "train_queries": len(train)}
    save(predictor, args.out, data=info, metrics=metrics)
    bs, orc = metrics["best_single"], metrics["oracle"]
    print(f"{args.method}: trained on {len(train)} queries x {len(train.models)} models in {train_s:.1f}s")
    print(
        f"held out ({len(test)} queries): quality {metrics['quality']:.4f} (best single {bs['model']} "
        f"{bs['quality']:.4f}, oracle {orc['quality']:.4f}), gap recovered {_pct(metrics['gap_recovered'])}"
    )
    print(
        f"top1 hit {_num(metrics['top1_hit'])}, top3 hit {_num(metrics['top3_hit'])}, "
        f"top3 agree {_num(metrics['top3_agree'])}, AIQ {_num(metrics['aiq'])}"
    )
    print(f"checkpoint: {args.out}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def scorer_add_model(args: argparse.Namespace) -> int:
    """Run `moai scorer add-model`: learn one new model's embedding from its rows; save the grown scorer."""
    import numpy as np

    from moai.scorer.checkpoint import load as load_checkpoint
    from moai.scorer.checkpoint import read_metadata, save
    from moai.scorer.data.routing import load, split_rows
    from moai.scorer.encoders import encoder_from_name

    quiet = bool(args.quiet)
    try:
        meta = read_metadata(args.ckpt)
        predictor = load_checkpoint(args.ckpt)
        data = load(args.data)
        col = data.models.index(args.model) if args.model in data.models else None
        if col is None:
            raise ValueError(f"model {args.model!r} has no line in the data; models there: {', '.join(data.models)}")
        encoder = encoder_from_name(predictor.encoder_name)
        train_rows, test_rows = split_rows(data, args.data, args.data, args.seed)
        emb, _ = _encode(encoder, data, quiet)
        start = time.perf_counter()
        predictor.add_model(args.model, emb[train_rows], data.scores[train_rows, col], args.seed, progress=not quiet)
        add_s = time.perf_counter() - start
    except (ValueError, FileNotFoundError, ModuleNotFoundError, NotImplementedError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    true = data.scores[test_rows, col]
    known = np.isfinite(true)
    pred = predictor.predict_embeddings(emb[test_rows][known])[:, -1]
    mse = float(np.mean((pred - true[known]) ** 2)) if known.any() else None
    baseline = float(np.mean((np.nanmean(data.scores[train_rows, col]) - true[known]) ** 2)) if known.any() else None
    metrics = dict(meta.get("metrics", {}))
    metrics.setdefault("added_models", {})[args.model] = {
        "rows": int(np.isfinite(data.scores[train_rows, col]).sum()),
        "held_out_rows": int(known.sum()),
        "held_out_mse": mse,
        "held_out_mse_of_mean": baseline,
        "add_s": round(add_s, 2),
    }
    data_info = dict(meta.get("data", {}))
    data_info.setdefault("added", {})[args.model] = [str(p) for p in args.data]
    save(predictor, args.out, data=data_info, metrics=metrics)
    how = "its rows were added" if predictor.method == "knn" else "only its embedding was trained"
    print(f"added {args.model} to {predictor.method} in {add_s:.1f}s ({how})")
    if mse is not None and baseline is not None:
        print(f"held out ({int(known.sum())} queries): MSE {mse:.4f} (predicting its mean: {baseline:.4f})")
    print(f"checkpoint: {args.out} ({len(predictor.models)} models)")
    return 0


def scorer_universe(args: argparse.Namespace) -> int:
    """Run `moai scorer universe`: choose the most complementary models greedily; print them in order."""
    import numpy as np

    from moai.scorer.data.routing import load
    from moai.scorer.universe import greedy_universe

    try:
        data = load(args.data)
        picks = greedy_universe(
            data.scores,
            data.models,
            args.size,
            costs=data.costs if data.has_costs else None,
            cost_weight=args.cost_weight,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    oracle = float(np.where(np.isfinite(data.scores), data.scores, 0.0).max(axis=1).mean())
    weight = f", cost weight {args.cost_weight:g}" if args.cost_weight else ""
    print(f"universe of {args.size} from {len(data.models)} models ({len(data)} queries{weight}):")
    width = max(len(p.model) for p in picks)
    for rank, pick in enumerate(picks, start=1):
        cost = f"  ${pick.cost:.6f}/query" if pick.cost is not None else ""
        print(
            f"{rank:>3}. {pick.model:<{width}}  adds {pick.gain:+.4f}  coverage {pick.coverage:.4f}  "
            f"best-of-set quality {pick.quality:.4f}{cost}"
        )
    print(f"all {len(data.models)} models: best-of-set quality {oracle:.4f}")
    return 0


def scorer_train_verifier(args: argparse.Namespace) -> int:
    """Run `moai scorer train-verifier`: fit on an internal split, print held-out AUC per model; refit on all; save.

    The held-out split is by query id, per file (80/20, seeded); the saved verifier is then trained on every
    graded answer, with the same settings, and records the held-out figures.
    """
    from moai.scorer.encoders import DEFAULT_ENCODER, STATIC_ENCODER, make_encoder
    from moai.scorer.verifier import evaluate, read_examples, save_verifier, split_ids, train_verifier

    quiet = bool(args.quiet)

    def say(message: str) -> None:
        _say(quiet, message)

    try:
        examples = read_examples(args.data)
        encoder = {"static": lambda: make_encoder(STATIC_ENCODER), "minilm": lambda: make_encoder(DEFAULT_ENCODER)}
        enc = encoder[args.encoder]() if args.encoder in encoder else None
        train: list[Any] = []
        test: list[Any] = []
        for source in dict.fromkeys(e.source for e in examples):
            rows = [e for e in examples if e.source == source]
            train_ids, _ = split_ids((e.id for e in rows), 0.2, args.seed, Path(source).name)
            for e in rows:
                (train if e.id in train_ids else test).append(e)
        if not test or not train:
            raise ValueError("too few queries to hold some out: give more graded answers")
        start = time.perf_counter()
        held = train_verifier(train, encoder=enc, seed=args.seed, progress=say)
        metrics = evaluate(held, test)
        say("refitting on every graded answer")
        verifier = train_verifier(examples, encoder=enc, seed=args.seed, progress=say)
        train_s = time.perf_counter() - start
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verifier.meta["held_out"] = {"split": "by id per file, 20% held out", "seed": args.seed, "auc": metrics}
    data = {
        "files": [str(p) for p in args.data],
        "answers": len(examples),
        "queries": len({(e.source, e.id) for e in examples}),
    }
    save_verifier(verifier, args.out, data=data)
    print(f"verifier: {len(examples)} answers of {len(verifier.models)} models, trained in {train_s:.1f}s")
    print(f"held out (20% of the queries of each file, seed {args.seed}): AUC per model")
    width = max(len(m) for m in metrics)
    for model, row in metrics.items():
        print(f"  {model:<{width}}  {_num(row['auc'])}  ({row['answers']} answers, {_pct(row['right'])} right)")
    print(f"checkpoint: {args.out}")
    return 0


def scorer_build_encoder(args: argparse.Namespace) -> int:
    """Build (or rebuild) a static encoder table ahead of its first use; print where and how long it took."""
    from moai.scorer.encoders.static import StaticEncoder, build_table, load_table

    start = time.perf_counter()
    try:
        folder = build_table(args.source, args.dim, force=args.force, progress=not args.quiet)
    except (ValueError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = load_table(folder).meta
    name = StaticEncoder(args.source, dim=args.dim).name
    print(f"{name}: {folder} (built in {meta['build_s']:.1f}s; this call {time.perf_counter() - start:.1f}s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from moai.scorer.encoders.sentence import DEFAULT_ENCODER

    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default 0)")
    p.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help=f"sentence-transformers model folder, or static-minilm (default: {DEFAULT_ENCODER}, shipped offline)",
    )
    p.add_argument(
        "--truncate",
        choices=("left", "right"),
        default="left",
        help="which end of a long prompt the encoder drops (default left: keeps the question at the end)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `bench routing` and `scorer train|add-model|universe` on the `moai` parser's subparsers."""
    from moai.scorer.benchmark.replay import ONLINE_METHODS
    from moai.scorer.encoders.sentence import DEFAULT_ENCODER
    from moai.scorer.predictors.registry import LEARNED, METHODS

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    p = bench_sub.add_parser("routing", help="train every scorer on a split and measure routing quality and cost")
    p.add_argument("--train", nargs="+", required=True, metavar="FILE", help="routing JSONL(.gz) to train on")
    p.add_argument("--test", nargs="+", required=True, metavar="FILE", help="routing JSONL(.gz) to test on")
    p.add_argument("--out", required=True, metavar="REPORT", help="where to write report.json")
    p.add_argument("--plot", metavar="PNG", help="also draw the cost-quality curves to this PNG")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=(*METHODS, *ONLINE_METHODS),
        default=None,
        metavar="METHOD",
        help=f"methods to run (default all: {', '.join(METHODS)}; 'descriptions' where --descriptions "
        "describes every model); 'online' also replays the test queries through the gate's bandit from no "
        "data (gate.learn's defaults), learning as it goes; 'online_described' starts it from the "
        "descriptions' scores; 'online_panel' and 'online_panel_described' learn every model's score of "
        "each query (a judged panel), not only the routed one's",
    )
    p.add_argument(
        "--descriptions",
        metavar="FILE",
        help="what each model declares, for the zero-shot method 'descriptions' (YAML: models: {name: "
        "{description, examples, avoid, quality}}; default: the RouterDC pool's, written from the model cards)",
    )
    _common(p)
    p.set_defaults(func=bench_routing)
    from moai.cli.bench import add_bench_parsers

    add_bench_parsers(bench_sub)  # `moai bench cascade`

    scorer = sub.add_parser("scorer", help="train and grow routing scorers")
    scorer_sub = scorer.add_subparsers(dest="scorer_command", required=True)
    p = scorer_sub.add_parser("train", help="train a scorer on routing data; print held-out metrics; save it")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="routing JSONL(.gz) files")
    p.add_argument("--method", required=True, choices=LEARNED, help="scorer method")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint folder to write")
    _common(p)
    p.set_defaults(func=scorer_train)

    p = scorer_sub.add_parser("add-model", help="add a model to a trained scorer, training only its embedding")
    p.add_argument("--ckpt", required=True, metavar="CKPT", help="checkpoint folder to start from")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="routing JSONL(.gz) with the model's lines")
    p.add_argument("--model", required=True, help="name of the model to add (as in the data)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of training (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=scorer_add_model)

    p = scorer_sub.add_parser("universe", help="choose the M most complementary models of a pool (greedy coverage)")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="routing JSONL(.gz) files")
    p.add_argument("--size", type=int, required=True, metavar="M", help="how many models to choose")
    p.add_argument(
        "--cost-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="quality points one dearest-model's mean cost is worth (default 0: quality alone)",
    )
    p.set_defaults(func=scorer_universe)

    p = scorer_sub.add_parser(
        "train-verifier",
        help="train a verifier (query, answer, model -> P(right)) on responses files; print held-out AUC; save it",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="FILE", help="responses JSONL(.gz) files (graded)")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of training (default 0)")
    p.add_argument(
        "--encoder",
        choices=VERIFIER_ENCODERS,
        default="static",
        help="query encoder of the kNN prior: static (default; fast on a CPU), minilm, or none (the model's mean)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=scorer_train_verifier)

    from moai.scorer.encoders.static import DEFAULT_DIM

    p = scorer_sub.add_parser(
        "build-encoder", help="distil the static encoder's token table into the cache ahead of its first use"
    )
    p.add_argument("--source", default=DEFAULT_ENCODER, help=f"model folder (default {DEFAULT_ENCODER})")
    p.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"principal axes kept (default {DEFAULT_DIM})")
    p.add_argument("--force", action="store_true", help="build again even when cached")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=scorer_build_encoder)
