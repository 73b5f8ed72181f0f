"""`moai bench cascade`: mixes that read the answers, run as graphs on recorded answers of real models.

What is trained or chosen is chosen on the train files only: the training queries are split by id into a
fit part (the gate's scorer is trained on it, and the cheap models of each cascade are chosen on it) and
a validation part (each method's operating point, a threshold or a cost weight, is the cheapest setting
whose validation quality reaches the best single model's there, else the best-quality one; `near_best`
is the same for 95% of it). Then, for
each method and each setting of its grid, a real mix file (models `provider: replay`, replaying the test
file) is compiled and run on every test query (`moai.replay_run`): every curve point is a graph run.

Methods:

- `best_single`: the model with the best quality on the fit part (ties: cheaper), alone;
- `gate`: pre-inference routing over the whole pool, with a kNN scorer trained on the fit part; the
  curve is over the gate's cost weight `objective.alpha`;
- `agreement`: two or three cheap models (chosen on the fit part) propose; when they do not all agree,
  the strong model (the best single one) answers; the curve is over the judge's `score_at_least`;
- `form`, `arithmetic`, `code`: the best cheap model answers; the strong model answers when the judge's
  score is below the threshold (a query where the judge has no opinion is decided by the model's prior);
- `verifier`: the same with the learned verifier's P(right), the verifier trained on the fit part only
  (`moai.scorer.verifier.train_verifier`, as `moai scorer train-verifier` does);
- `combined`: the agreement proposers (or the best cheap model) judged by every answer-reading judge
  together (the verifier's P(right) among them), blended with the gate's kNN prior at a weight chosen on
  validation (with the verifier declared, the verifier stands for that prior).

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
from moai.scorer.data.split import is_test_id
from moai.scorer.select import TYPICAL_PROMPT_TOKENS

if TYPE_CHECKING:
    from moai.scorer.encoders import TextEncoder

__all__ = ["VALIDATION_SHARE", "cascade_bench"]

VALIDATION_SHARE = 0.25
"""Share of the training queries (by id) that chooses each method's operating point."""
THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
"""The judges' `stop_when.score_at_least` grid."""
AGREEMENT_THRESHOLDS = (0.0, 0.5, 1.0)
"""The agreement cascade's grid: its scores are shares of agreeing proposers (0, 1/2, 1 for three)."""
COMBINED_THRESHOLDS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
"""The combined judge's grid, crossed with `PRIOR_WEIGHTS` (below 0.6 it escalates too seldom to matter)."""
ALPHAS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 1.0)
"""The gate's cost weight grid."""
PRIOR_WEIGHTS = (0.25, 0.5, 0.75)
"""Weights of the gate's prior in the combined judge's blend, chosen on validation."""
NEAR_SHARE = 0.95
"""`near_best`: the cheapest setting reaching this share of the best single model's validation quality."""
VERIFIER_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.725, 0.75, 0.775, 0.8, 0.85, 0.9)
"""The verifier cascade's grid: the verifier's P(right) of the cheap model's answer."""
SCORER_ENCODER = "static-minilm"
"""The gate scorer's encoder: fast enough to score every query of every run (about a millisecond)."""


@dataclass
class Method:
    """A method: the settings of its curve and the mix of each setting."""

    name: str
    description: str
    settings: list[dict[str, Any]]
    mix: Callable[[Mapping[str, Any], str], dict[str, Any]]
    """Builds the mix of a setting, replaying the given responses file."""
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


def _train_scorer(fit: RoutingData, folder: Path, seed: int, quiet: bool, encoder: TextEncoder | None) -> Path:
    """Train the gate's kNN scorer on the fit queries (their prompts as the gate sees them) and save it."""
    from moai.scorer.checkpoint import save
    from moai.scorer.encoders import make_encoder
    from moai.scorer.encoders.sentence import cached_encode
    from moai.scorer.predictors.registry import make

    encoder = encoder or make_encoder(SCORER_ENCODER, threads=2)
    emb = cached_encode(encoder, list(fit.prompts), progress=not quiet)
    predictor = make("knn", encoder=encoder)
    predictor.fit(emb, fit.scores, fit.models, seed, tasks=fit.tasks, costs=fit.costs)
    save(predictor, folder, data={"hash": fit.fingerprint(), "train_queries": len(fit)})
    return folder


class _Pool:
    """The replay models of the mixes: declared quality and price from the fit queries."""

    def __init__(self, quality: Mapping[str, float], cost: Mapping[str, float]) -> None:
        self.quality, self.cost = quality, cost

    def models(self, names: Sequence[str], responses: str) -> dict[str, Any]:
        # The price makes a typical call cost the model's mean cost on the fit queries, so the gate's cost
        # order and cost weight see what the data says; what each run costs is the recorded cost.
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


def _single(pool: _Pool, model: str) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    def mix(setting: Mapping[str, Any], responses: str) -> dict[str, Any]:
        return {
            "name": "best_single",
            "description": f"{model} alone.",
            "models": pool.models([model], responses),
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "last"},
        }

    return mix


def _gate(pool: _Pool, models: Sequence[str], scorer: str) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    def mix(setting: Mapping[str, Any], responses: str) -> dict[str, Any]:
        return {
            "name": "gate",
            "description": "Route each query to one model before any answer, on a kNN scorer's prediction.",
            "models": pool.models(models, responses),
            "gate": {"scorer": scorer, "order": "score", "top_k": 1, "objective": {"alpha": setting["alpha"]}},
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "last"},
        }

    return mix


def _cascade(
    pool: _Pool,
    name: str,
    proposers: Sequence[str],
    strong: str,
    read: Sequence[str],
    scorer: str = "priors",
    judge: Mapping[str, Any] | None = None,
) -> Callable[[Mapping[str, Any], str], dict[str, Any]]:
    def mix(setting: Mapping[str, Any], responses: str) -> dict[str, Any]:
        return {
            "name": name,
            "description": f"{', '.join(proposers)} answer first; {strong} answers when the judges "
            f"({', '.join(read)}) score them below the threshold.",
            "models": pool.models([*proposers, strong], responses),
            "gate": {
                "scorer": scorer,
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
                | dict(judge or {}),
            ],
            "aggregate": {"mode": "last"},
        }

    return mix


def _train_verifier(responses: Path, ids: set[str], folder: Path, seed: int, encoder: TextEncoder | None) -> str | None:
    """Train the `verifier` judge on the graded answers to the fit queries only; save it.

    Returns:
        The folder's name: the mix files lie beside it.
    """
    from moai.scorer.encoders import make_encoder
    from moai.scorer.verifier import read_examples, save_verifier, train_verifier

    examples = [e for e in read_examples([responses]) if e.id in ids]
    if len({e.score >= 0.5 for e in examples}) < 2:
        return None  # nothing to learn from: the fit answers are all right or all wrong
    model = train_verifier(examples, encoder=encoder or make_encoder(SCORER_ENCODER), seed=seed)
    save_verifier(model, folder, data={"files": [str(responses)], "queries": len(ids)})
    return folder.name


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
        seed: Seeds the validation split and the scorer.
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
    # Salted apart from `moai dataset split`'s hash: with the same seed, its train side would hold no validation ids.
    is_val = np.array([is_test_id(f"validation:{i}", VALIDATION_SHARE, seed) for i in train.ids])
    if is_val.all() or not is_val.any():
        raise ValueError(f"too few training queries ({len(train)}) to hold out a validation share")
    fit, val = train.subset(np.flatnonzero(~is_val)), train.subset(np.flatnonzero(is_val))
    quality, cost = _means(fit)
    pool = _Pool(quality, cost)
    strong = max(models, key=lambda m: (quality[m], -cost[m]))
    cheap_models = [m for m in models if m != strong and cost[m] <= CHEAP_SHARE * cost[strong]]
    cheap = max(cheap_models, key=lambda m: (quality[m], -cost[m])) if cheap_models else None
    index = responses_index(train_responses)
    proposers, choice = choose_proposers(fit, index, strong)
    _say(
        quiet,
        f"fit {len(fit)}, validation {len(val)}, test {len(test)} queries; strong {strong}, cheap {cheap}, "
        f"agreement proposers {proposers or 'none'}",
    )
    scorer_start = time.perf_counter()
    # Checkpoints are named relative to the mix files, which lie beside them: a report's mix re-runs from
    # that folder wherever the folder is moved.
    scorer = _train_scorer(fit, folder / "gate_scorer", seed, quiet, encoder).name
    scorer_s = time.perf_counter() - scorer_start
    timings_setup: dict[str, float] = {"scorer_train_s": round(scorer_s, 2)}

    thresholds = [{"threshold": t} for t in THRESHOLDS]
    methods = [
        Method("best_single", f"{strong} alone (the best on the fit queries)", [{}], _single(pool, strong)),
        Method(
            "gate",
            "pre-inference routing over the pool, kNN scorer",
            [{"alpha": a} for a in ALPHAS],
            _gate(pool, models, scorer),
        ),
    ]
    skipped: dict[str, str] = {}
    if proposers:
        methods.append(
            Method(
                "agreement",
                f"{' + '.join(proposers)} agree, else {strong}",
                [{"threshold": t} for t in AGREEMENT_THRESHOLDS],
                _cascade(pool, "agreement", proposers, strong, ["agreement"]),
                {"proposers": choice},
            )
        )
    else:
        skipped["agreement"] = choice.get("reason", "no proposers")
    verifier = None
    if cheap is not None:
        fit_ids = set(fit.ids)
        verifier_start = time.perf_counter()
        verifier = _train_verifier(train_responses, fit_ids, folder / "verifier", seed, encoder)
        timings_setup["verifier_train_s"] = round(time.perf_counter() - verifier_start, 2)
    if cheap is not None:
        extra = ["code", *extra_read]
        for judge in ("form", "arithmetic", *extra):
            methods.append(
                Method(
                    judge,
                    f"{cheap}, else {strong} when {judge} is low",
                    thresholds,
                    _cascade(pool, judge, [cheap], strong, [judge]),
                )
            )
        if verifier is not None:
            methods.append(
                Method(
                    "verifier",
                    f"{cheap}, else {strong} when the verifier's P(right), trained on the fit queries, is low",
                    [{"threshold": t} for t in VERIFIER_THRESHOLDS],
                    _cascade(pool, "verifier", [cheap], strong, ["verifier"], judge={"verifier": verifier}),
                )
            )
        first = proposers or [cheap]
        read = (["agreement"] if proposers else []) + ["form", "arithmetic", *extra]
        if verifier is not None:
            read.append("verifier")
        methods.append(
            Method(
                "combined",
                f"{' + '.join(first)}, judged by {', '.join(read)} with the gate's prior, else {strong}",
                # With the verifier declared, prior_weight is not applied (the verifier stands for the prior).
                [{"threshold": t, "prior_weight": PRIOR_WEIGHTS[0]} for t in VERIFIER_THRESHOLDS]
                if verifier is not None
                else [{"threshold": t, "prior_weight": w} for w in PRIOR_WEIGHTS for t in COMBINED_THRESHOLDS],
                _cascade(
                    pool, "combined", first, strong, read, scorer, judge={"verifier": verifier} if verifier else None
                ),
            )
        )
    else:
        skipped["cascades"] = f"no model costs at most {CHEAP_SHARE:.0%} of {strong}'s"

    val_queries, test_queries = _queries(val), _queries(test)
    tasks: list[tuple[str, Sequence[tuple[str, str]], Sequence[str], int]] = []
    texts: dict[tuple[str, str, int], str] = {}
    for method in methods:
        for i, setting in enumerate(method.settings):
            sides = (("val", train_responses, val_queries), ("test", test_responses, test_queries))
            for phase, responses, queries in sides:
                comment = (
                    f"moai bench cascade: method {method.name}, setting {dict(setting)}\n"
                    f"trained and chosen on {', '.join(map(str, train_files))} (seed {seed}); replays {responses}"
                )
                text = _mix_text(method.mix(setting, str(responses)), comment)
                path = folder / f"{method.name}-{phase}{i}.yaml"
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
            for phase in ("val", "test"):
                summary, took = next(results)
                seconds += took
                (val_points if phase == "val" else test_points).setdefault(method.name, []).append(
                    dict(setting) | summary
                )
        timings[method.name] = round(seconds, 2)
        _say(
            quiet,
            f"  {method.name}: {len(method.settings)} settings x ({len(val_queries)} validation + "
            f"{len(test_queries)} test) runs, {seconds:.1f}s of work",
        )
    # best_single's validation quality is every method's bar: an operating point must reach it there.
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
        # A second operating point, for targets stated as a share of the best single model's quality.
        near = operating_point(val_points[method.name], NEAR_SHARE * bar_val)
        entry["near_best"] = {
            "share": NEAR_SHARE,
            "setting": dict(method.settings[near]),
            "quality": round(points[near]["quality"], 6),
            "cost": round(points[near]["cost"], 8),
            "quality_ratio": round(points[near]["quality"] / best["quality"], 4) if best["quality"] else None,
            "cost_ratio": round(points[near]["cost"] / best["cost"], 4) if best["cost"] else None,
        }
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
            "fit_queries": len(fit),
            "validation_queries": len(val),
            "test_queries": len(test),
            "models": models,
            "strong": strong,
            "cheap": cheap,
            "scorer": {"method": "knn", "encoder": SCORER_ENCODER, "checkpoint": scorer, "train_s": round(scorer_s, 2)},
            "skipped": skipped,
            "has_costs": True,
            "verifier": verifier,
            **timings_setup,
            "concurrency": concurrency,
            "jobs": jobs,
            "graph_runs": sum(len(m.settings) * (len(val_queries) + len(test_queries)) for m in methods),
            "wall_s": round(time.perf_counter() - start, 2),
        },
        "models": singles,
        "best_single": best,
        "oracle": {"quality": round(orc["quality"], 6), "cost": None if orc["cost"] is None else round(orc["cost"], 8)},
        "methods": report_methods,
    }
