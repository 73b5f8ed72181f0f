"""`moai bench cascade`: mixes that read the answers, run as graphs on recorded answers of real models.

What is trained or chosen is chosen on the train files only. The models of each method (the strong model,
the cheap one, the agreement proposers) are chosen on all of train. What is learned (the gate's scorer, the
verifier, the declared quality and price of the pool) is **cross-fitted**: the training queries are split
by id into `FOLDS` folds, and each fold's queries are run with what was learned on the other folds, so
every training query is a validation query of a method that never saw it. Each method's operating point
(a threshold or a cost weight) is the cheapest setting whose quality over those out-of-fold runs reaches
the best single model's there, else the best-quality one (the report keeps the whole out-of-fold curve,
`validation_curve`, for other rules). Then
what is learned is learned again on all of train, and, for each method and each setting of its grid, a
real mix file (models `provider: replay`, replaying the test file) is compiled and run on every test
query (`moai.replay_run`): every curve point is a graph run.

Methods:

- `best_single`: the model with the best quality on train (ties: cheaper), alone;
- `gate`: pre-inference routing over the whole pool, with a kNN scorer trained on train; the
  curve is over the gate's cost weight `objective.alpha`;
- `agreement`: two or three cheap models (chosen on train) propose; when they do not all agree,
  the strong model (the best single one) answers; the curve is over the judge's `score_at_least`;
- `form`, `arithmetic`, `code`: the best cheap model answers; the strong model answers when the judge's
  score is below the threshold (a query where the judge has no opinion is decided by the model's prior);
- `verifier`: the same with the learned verifier's P(right), the verifier trained on train only
  (`moai.scorer.verifier.train_verifier`, as `moai scorer train-verifier` does);
- `combined`: the agreement proposers (or the best cheap model) judged by every answer-reading judge
  together (the verifier's P(right) among them), blended with the gate's kNN prior at a weight chosen on
  validation (with the verifier declared, the verifier stands for that prior).

Cross-fitting replaces a held-out validation share: with 300 training queries (GSM8K here) a quarter of
them chose operating points by noise, and the verifier learned from three quarters only.

`logprob` is not run: recorded answers carry no token log-probabilities.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from moai.replay_run import DEFAULT_CONCURRENCY, run_files
from moai.scorer.benchmark.cascade import CHEAP_SHARE, choose_proposers, curve_entry, operating_point
from moai.scorer.benchmark.evaluate import oracle
from moai.scorer.data.responses import responses_index
from moai.scorer.data.routing import RoutingData, load
from moai.scorer.data.split import fold_of
from moai.scorer.select import TYPICAL_PROMPT_TOKENS

if TYPE_CHECKING:
    from moai.scorer.encoders import TextEncoder
    from moai.scorer.verifier import Example

__all__ = ["FOLDS", "cascade_bench"]

FOLDS = 4
"""Folds of the training queries (by id) for cross-fitting: each fold is run with what the others taught."""
THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
"""The judges' `stop_when.score_at_least` grid."""
AGREEMENT_THRESHOLDS = (0.0, 0.5, 1.0)
"""The agreement cascade's grid: its scores are shares of agreeing proposers (0, 1/2, 1 for three)."""
COMBINED_THRESHOLDS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
"""The combined judge's grid, crossed with `PRIOR_WEIGHTS` (below 0.6 it escalates too seldom to matter)."""
ALPHAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 1.0)
"""The gate's cost weight grid."""
PRIOR_WEIGHTS = (0.25, 0.5, 0.75)
"""Weights of the gate's prior in the combined judge's blend, chosen on out-of-fold runs."""
VERIFIER_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.625, 0.65, 0.675, 0.7, 0.725, 0.75, 0.775, 0.8, 0.825, 0.85, 0.9)
"""The verifier cascade's grid: the verifier's P(right) of the cheap model's answer."""
SCORER_ENCODER = "static-minilm"
"""The gate scorer's encoder: fast enough to score every query of every run (about a millisecond)."""


MixBuilder = Callable[[Mapping[str, Any], str, "Learned"], dict[str, Any]]
"""Builds the mix of a setting, replaying the given responses file, with what was learned (`Learned`)."""


@dataclass
class Method:
    """A method: the settings of its curve and the mix of each setting."""

    name: str
    description: str
    settings: list[dict[str, Any]]
    mix: MixBuilder
    info: dict[str, Any] = field(default_factory=dict)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _merged(files: Sequence[str | os.PathLike[str]], work: Path, name: str) -> Path:
    """Return the one responses file the replay models read: the file itself, or the files concatenated."""
    if len(files) == 1:
        return Path(files[0]).resolve()
    import gzip

    out = work / f"{name}.jsonl"
    with open(out, "wb") as sink:
        for path in files:
            with open(path, "rb") as probe:
                gz = probe.read(2) == b"\x1f\x8b"
            with gzip.open(path, "rb") if gz else open(path, "rb") as src:
                shutil.copyfileobj(src, sink)
    return out.resolve()


def _means(data: RoutingData) -> tuple[dict[str, float], dict[str, float]]:
    with np.errstate(all="ignore"):
        quality = np.nanmean(data.scores, axis=0)
        cost = np.nanmean(np.nan_to_num(data.costs, nan=0.0), axis=0)
    return (
        {m: float(np.nan_to_num(q)) for m, q in zip(data.models, quality, strict=True)},
        {m: float(c) for m, c in zip(data.models, cost, strict=True)},
    )


def _queries(data: RoutingData) -> list[tuple[str, str]]:
    return list(zip(data.ids, data.prompts, strict=True))


def _pooled(parts: Sequence[tuple[Mapping[str, Any], int]]) -> dict[str, Any]:
    """Return the summary of runs over several folds from each fold's summary and number of queries."""
    n = sum(count for _, count in parts)
    out: dict[str, Any] = {
        key: sum(p[key] * count for p, count in parts) / n for key in ("quality", "cost", "strong_share")
    }
    out["failed"] = sum(p["failed"] for p, _ in parts)
    return out


def _train_scorer(data: RoutingData, folder: Path, seed: int, encoder: TextEncoder) -> str:
    """Train the gate's kNN scorer on these queries (their prompts as the gate sees them), save it, name it."""
    from moai.scorer.checkpoint import save
    from moai.scorer.encoders.sentence import cached_encode
    from moai.scorer.predictors.registry import make

    emb = cached_encode(encoder, list(data.prompts), progress=False)
    predictor = make("knn", encoder=encoder)
    predictor.fit(emb, data.scores, data.models, seed, tasks=data.tasks, costs=data.costs)
    save(predictor, folder, data={"hash": data.fingerprint(), "train_queries": len(data)})
    return folder.name


def _train_verifier(
    examples: Sequence[Example], ids: set[str], responses: Path, folder: Path, seed: int, encoder: TextEncoder
) -> str | None:
    """Train the `verifier` judge on the graded answers to these queries only, save it, name it.

    Returns:
        The folder's name (the mix files lie beside it), or None when the answers are all right or all wrong.
    """
    from moai.scorer.verifier import save_verifier, train_verifier

    chosen = [e for e in examples if e.id in ids]
    if len({e.score >= 0.5 for e in chosen}) < 2:
        return None
    model = train_verifier(chosen, encoder=encoder, seed=seed)
    save_verifier(model, folder, data={"files": [str(responses)], "queries": len(ids)})
    return folder.name


class _Pool:
    """The replay models of the mixes: declared quality and price from training queries."""

    def __init__(self, data: RoutingData) -> None:
        self.quality, self.cost = _means(data)

    def models(self, names: Sequence[str], responses: str) -> dict[str, Any]:
        # The price makes a typical call cost the model's mean cost on the training queries, so the gate's
        # cost order and cost weight see what the data says; what each run costs is the recorded cost.
        return {
            name: {
                "provider": "replay",
                "model": name,
                "responses": responses,
                "quality": round(min(1.0, max(0.0, self.quality[name])), 6),
                "price": {"input_per_mtok": round(self.cost[name] / TYPICAL_PROMPT_TOKENS * 1e6, 9)},
            }
            for name in names
        }


@dataclass
class Learned:
    """What the mixes use that is learned from training queries: once per fold, and once on all of train."""

    pool: _Pool
    scorer: str
    """The gate scorer's checkpoint folder, named relative to the mix files."""
    verifier: str | None
    """The verifier's checkpoint folder, or None (nothing to learn from)."""


def _learn(
    data: RoutingData,
    examples: Sequence[Example],
    responses: Path,
    folder: Path,
    tag: str,
    seed: int,
    encoder: TextEncoder,
) -> Learned:
    """Learn the pool's figures, the gate's scorer and the verifier from these training queries.

    The checkpoints lie beside the mix files, which name them relatively: a report's mix re-runs from that
    folder wherever the folder is moved.
    """
    scorer = _train_scorer(data, folder / f"gate_scorer{tag}", seed, encoder)
    verifier = _train_verifier(examples, set(data.ids), responses, folder / f"verifier{tag}", seed, encoder)
    return Learned(_Pool(data), scorer, verifier)


def _single(model: str) -> MixBuilder:
    def mix(setting: Mapping[str, Any], responses: str, learned: Learned) -> dict[str, Any]:
        return {
            "name": "best_single",
            "description": f"{model} alone.",
            "models": learned.pool.models([model], responses),
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "last"},
        }

    return mix


def _gate(models: Sequence[str]) -> MixBuilder:
    def mix(setting: Mapping[str, Any], responses: str, learned: Learned) -> dict[str, Any]:
        return {
            "name": "gate",
            "description": "Route each query to one model before any answer, on a kNN scorer's prediction.",
            "models": learned.pool.models(models, responses),
            "gate": {
                "scorer": learned.scorer,
                "order": "score",
                "top_k": 1,
                "objective": {"alpha": setting["alpha"]},
            },
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "last"},
        }

    return mix


def _cascade(
    name: str,
    proposers: Sequence[str],
    strong: str,
    read: Sequence[str],
    *,
    prior: bool = False,
) -> MixBuilder:
    """A cascade: the proposers answer; the strong model answers when the judges score them low.

    Args:
        prior: The gate's scorer gives the judge its prior (else the models' declared quality does).
    """

    def mix(setting: Mapping[str, Any], responses: str, learned: Learned) -> dict[str, Any]:
        judge: dict[str, Any] = {"verifier": learned.verifier} if "verifier" in read else {}
        return {
            "name": name,
            "description": f"{', '.join(proposers)} answer first; {strong} answers when the judges "
            f"({', '.join(read)}) score them below the threshold.",
            "models": learned.pool.models([*proposers, strong], responses),
            "gate": {
                "scorer": learned.scorer if prior else "priors",
                "candidates": [*proposers, strong],
                "order": "cost",
                "top_k": len(proposers),
            },
            "steps": [
                {"kind": "propose", "name": "try"},
                {
                    "kind": "judge",
                    "name": "check",
                    "self": False,
                    "cross": None,
                    "read": list(read),
                    "prior_weight": setting.get("prior_weight", 0.0),
                    "stop_when": {"score_at_least": setting["threshold"], "max_rounds": 2},
                    "otherwise": "try",
                    "then_select": "next",
                }
                | judge,
            ],
            "aggregate": {"mode": "last"},
        }

    return mix


def _mix_text(mix: Mapping[str, Any], comment: str) -> str:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.safe_dump(dict(mix), sort_keys=False, allow_unicode=True, width=120)


def cascade_bench(
    train_files: Sequence[str | os.PathLike[str]],
    test_files: Sequence[str | os.PathLike[str]],
    work: str | os.PathLike[str],
    *,
    seed: int = 0,
    concurrency: int = DEFAULT_CONCURRENCY,
    jobs: int = 2,
    extra_read: Sequence[str] = (),
    encoder: TextEncoder | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train on the train files, run every method's mixes on the test files, and return the report.

    Args:
        train_files: Responses files to train and choose on.
        test_files: Responses files to measure on (no id of theirs may be in the train files).
        work: Folder for the mix files of every point and the gate's scorer checkpoint.
        seed: Seeds the folds, the scorer and the verifier.
        concurrency: Graph runs in flight at once in each process.
        jobs: Mix files run at once, each in its own process (1: all in this one).
        extra_read: Further answer-reading judges (beside agreement, form, arithmetic, code, verifier) to try.
        encoder: The gate scorer's encoder (default `SCORER_ENCODER`); a checkpoint names it, and a
            mix's gate rebuilds it by that name.
        quiet: No progress output.

    Raises:
        ValueError: A file is malformed, a query id is in both train and test, or the data has no costs.
    """
    start = time.perf_counter()
    folder = Path(work)
    folder.mkdir(parents=True, exist_ok=True)
    train, test = load([Path(p) for p in train_files]), load([Path(p) for p in test_files])
    if shared := sorted(set(train.ids) & set(test.ids)):
        raise ValueError(
            f"{len(shared)} query id(s) are in both --train and --test (e.g. {shared[0]!r}): split the data by "
            "id first (moai dataset split FILE --test-share 0.2 --out-train A --out-test B)"
        )
    models = [m for m in train.models if m in test.models]
    train, test = train.select_models(models), test.select_models(models)
    if not train.has_costs:
        raise ValueError("the train files record no costs: a cascade trades cost for quality, and needs them")
    train_responses = _merged(train_files, folder, "train_responses")
    test_responses = _merged(test_files, folder, "test_responses")
    fold = np.array([fold_of(i, FOLDS, seed) for i in train.ids])
    if len(set(fold.tolist())) < FOLDS:
        raise ValueError(f"too few training queries ({len(train)}) to cross-fit over {FOLDS} folds")
    quality, cost = _means(train)
    strong = max(models, key=lambda m: (quality[m], -cost[m]))
    cheap_models = [m for m in models if m != strong and cost[m] <= CHEAP_SHARE * cost[strong]]
    cheap = max(cheap_models, key=lambda m: (quality[m], -cost[m])) if cheap_models else None
    proposers, choice = choose_proposers(train, responses_index(train_responses), strong)
    _say(
        quiet,
        f"train {len(train)} ({FOLDS} folds), test {len(test)} queries; strong {strong}, cheap {cheap}, "
        f"agreement proposers {proposers or 'none'}",
    )

    from moai.scorer.encoders import make_encoder
    from moai.scorer.verifier import read_examples

    learn_start = time.perf_counter()
    encoder = encoder or make_encoder(SCORER_ENCODER, threads=2)
    examples = read_examples([train_responses]) if cheap is not None else []
    folds = [train.subset(np.flatnonzero(fold == f)) for f in range(FOLDS)]
    learned = [
        _learn(train.subset(np.flatnonzero(fold != f)), examples, train_responses, folder, f"-fold{f}", seed, encoder)
        for f in range(FOLDS)
    ]
    final = _learn(train, examples, train_responses, folder, "", seed, encoder)
    learn_s = time.perf_counter() - learn_start
    _say(quiet, f"learned the scorer and the verifier {FOLDS + 1} times in {learn_s:.1f}s")

    thresholds = [{"threshold": t} for t in THRESHOLDS]
    methods = [
        Method("best_single", f"{strong} alone (the best on train)", [{}], _single(strong)),
        Method(
            "gate", "pre-inference routing over the pool, kNN scorer", [{"alpha": a} for a in ALPHAS], _gate(models)
        ),
    ]
    skipped: dict[str, str] = {}
    if proposers:
        methods.append(
            Method(
                "agreement",
                f"{' + '.join(proposers)} agree, else {strong}",
                [{"threshold": t} for t in AGREEMENT_THRESHOLDS],
                _cascade("agreement", proposers, strong, ["agreement"]),
                {"proposers": choice},
            )
        )
    else:
        skipped["agreement"] = choice.get("reason", "no proposers")
    # The verifier's methods need one learned on every fold and on all of train.
    verifier = all(x.verifier for x in (*learned, final))
    if cheap is not None:
        extra = ["code", *extra_read]
        for judge in ("form", "arithmetic", *extra):
            methods.append(
                Method(
                    judge,
                    f"{cheap}, else {strong} when {judge} is low",
                    thresholds,
                    _cascade(judge, [cheap], strong, [judge]),
                )
            )
        if verifier:
            methods.append(
                Method(
                    "verifier",
                    f"{cheap}, else {strong} when the verifier's P(right), trained on train, is low",
                    [{"threshold": t} for t in VERIFIER_THRESHOLDS],
                    _cascade("verifier", [cheap], strong, ["verifier"]),
                )
            )
        else:
            skipped["verifier"] = "the training answers of a fold are all right or all wrong"
        first = proposers or [cheap]
        read = (["agreement"] if proposers else []) + ["form", "arithmetic", *extra]
        if verifier:
            read.append("verifier")
        methods.append(
            Method(
                "combined",
                f"{' + '.join(first)}, judged by {', '.join(read)} with the gate's prior, else {strong}",
                # With the verifier declared, prior_weight is not applied (the verifier stands for the prior).
                [{"threshold": t, "prior_weight": PRIOR_WEIGHTS[0]} for t in VERIFIER_THRESHOLDS]
                if verifier
                else [{"threshold": t, "prior_weight": w} for w in PRIOR_WEIGHTS for t in COMBINED_THRESHOLDS],
                _cascade("combined", first, strong, read, prior=True),
            )
        )
    else:
        skipped["cascades"] = f"no model costs at most {CHEAP_SHARE:.0%} of {strong}'s"

    # Each setting runs once per fold (on that fold's queries, with what the other folds taught) and once on test.
    sides = [(f"val{f}", train_responses, _queries(folds[f]), learned[f]) for f in range(FOLDS)] + [
        ("test", test_responses, _queries(test), final)
    ]
    tasks: list[tuple[str, Sequence[tuple[str, str]], Sequence[str], int]] = []
    texts: dict[tuple[str, str, int], str] = {}
    for method in methods:
        for i, setting in enumerate(method.settings):
            for phase, responses, queries, taught in sides:
                comment = (
                    f"moai bench cascade: method {method.name}, setting {dict(setting)}\n"
                    f"trained and chosen on {', '.join(map(str, train_files))} (seed {seed}); replays {responses}"
                )
                text = _mix_text(method.mix(setting, str(responses), taught), comment)
                path = folder / f"{method.name}-{phase}-{i}.yaml"
                path.write_text(text, encoding="utf-8")
                texts[(method.name, phase, i)] = text
                tasks.append((str(path), queries, [strong], concurrency))
    _say(quiet, f"{len(tasks)} mix files, {sum(len(t[1]) for t in tasks)} graph runs, {jobs} at a time")
    results = iter(run_files(tasks, jobs))
    val_points: dict[str, list[dict[str, Any]]] = {}
    test_points: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}
    for method in methods:
        seconds = 0.0
        for setting in method.settings:
            per_fold = []
            for phase, _, queries, _ in sides:
                summary, took = next(results)
                seconds += took
                if phase == "test":
                    test_points.setdefault(method.name, []).append(dict(setting) | summary)
                else:
                    per_fold.append((summary, len(queries)))
            val_points.setdefault(method.name, []).append(dict(setting) | _pooled(per_fold))
        timings[method.name] = round(seconds, 2)
        _say(
            quiet,
            f"  {method.name}: {len(method.settings)} settings x ({len(train)} out-of-fold + {len(test)} test) "
            f"runs, {seconds:.1f}s of work",
        )
    # best_single's out-of-fold quality is every method's bar: an operating point must reach it there.
    bar_val = val_points["best_single"][0]["quality"]
    chosen = {name: operating_point(points, bar_val) for name, points in val_points.items()}

    reference = test_points["best_single"][0]
    best = {"model": strong, "quality": round(reference["quality"], 6), "cost": round(reference["cost"], 8)}
    test_quality, test_cost = _means(test)
    singles = {m: {"quality": round(test_quality[m], 6), "cost": round(test_cost[m], 8)} for m in models}
    cost_range = (min(v["cost"] for v in singles.values()), max(v["cost"] for v in singles.values()))
    report_methods: dict[str, Any] = {}
    for method in methods:
        points = test_points[method.name]
        at = chosen[method.name]
        entry = curve_entry(points, at, best, cost_range)
        val_at = val_points[method.name][at]
        entry["description"] = method.description
        entry["setting"] = dict(method.settings[at])
        entry["validated"] = {
            "quality": round(val_at["quality"], 6),
            "cost": round(val_at["cost"], 8),
            "bar": round(bar_val, 6),
        }
        # The out-of-fold curve, for targets stated otherwise (e.g. the best quality within a cost share).
        entry["validation_curve"] = [
            dict(p) | {"quality": round(p["quality"], 6), "cost": round(p["cost"], 8)} for p in val_points[method.name]
        ]
        entry["strong_share"] = round(points[at]["strong_share"], 4)
        entry["failed"] = points[at]["failed"]
        if "proposers" in method.info:
            entry["proposers"] = method.info["proposers"]
        entry["run_s"] = timings[method.name]
        entry["mix"] = texts[(method.name, "test", at)]
        report_methods[method.name] = entry
    orc = oracle(test)
    return {
        "setup": {
            "train_files": [str(p) for p in train_files],
            "test_files": [str(p) for p in test_files],
            "seed": seed,
            "train_queries": len(train),
            "folds": FOLDS,
            "test_queries": len(test),
            "models": models,
            "strong": strong,
            "cheap": cheap,
            "scorer": {"method": "knn", "encoder": encoder.name, "checkpoint": final.scorer},
            "skipped": skipped,
            "has_costs": True,
            "verifier": final.verifier if verifier else None,
            "learn_s": round(learn_s, 2),
            "concurrency": concurrency,
            "jobs": jobs,
            "graph_runs": sum(len(m.settings) * (len(train) + len(test)) for m in methods),
            "wall_s": round(time.perf_counter() - start, 2),
        },
        "models": singles,
        "best_single": best,
        "oracle": {"quality": round(orc["quality"], 6), "cost": None if orc["cost"] is None else round(orc["cost"], 8)},
        "methods": report_methods,
    }
