"""The routing benchmark: train scorers on one split, route the other, and measure quality against cost.

For a method and a cost weight alpha, each test query goes to ``argmax_m pred[q, m] / cost_m ** alpha``
(cost_m: the model's mean cost per query on train; ties go to the cheaper model), among the models that
have a line for that query, and gets that model's true score and true cost. Alpha 0 routes on predicted
quality alone; the alpha grid traces the cost-quality curve. Without costs only alpha 0 is run.

Reference points, over what exists in the test split:

- best single model: the model with the highest mean test score (the bar a router must clear);
- oracle: each query's best true score, ties to the cheapest model.

The method `online` trains on nothing: it replays the test queries in a seeded order through the gate's
bandit (`moai.scorer.benchmark.replay`), learning each routed query's recorded score as it goes; its
entry adds `online`, with the curves of gap recovered against the number of queries seen. Its variants
(`ONLINE_METHODS`) start from the zero-shot descriptions' scores (`online_described`), learn every
model's score of each query as a judged panel would (`online_panel`), or both.

Per method: quality and cost at alpha 0 (the quality-maximising setting, chosen a priori, never on
test), gap recovered ``(quality - best single) / (oracle - best single)``, RouteMoA's Top-1-Hit,
Top-3-Hit and Top-3-Agree, the curve, RouterBench's AIQ, the cost at which the curve first reaches the
best single model's quality, and the quality it reaches at the best single model's cost.

The cheapest test point that reaches the best single model's quality is an optimistic figure: it picks
the alpha on the test split itself. `validated` is the honest counterpart, a deployable operating point:
the method is trained again on the training queries less a seeded validation share (20%), the alpha is
chosen on that share (the largest grid alpha, i.e. the cheapest routing, whose validation quality reaches
that of the share's best single model; alpha 0 when none does), and that model routes test at that alpha.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from moai.scorer.benchmark.replay import ONLINE_METHODS
from moai.scorer.data.routing import RoutingData
from moai.scorer.objective import ALPHAS, aiq, model_costs, route
from moai.scorer.predictors.base import FloatArray, ScorePredictor, validation_rows
from moai.scorer.predictors.registry import make

if TYPE_CHECKING:
    from moai.scorer.encoders import TextEncoder
    from moai.scorer.predictors.descriptions import Description, Domain

__all__ = [
    "METHOD_KEYS",
    "OPERATING_FRACTION",
    "REPORT_KEYS",
    "ROUTERDC_DESCRIPTIONS",
    "aligned",
    "best_single",
    "fmt_cell",
    "format_table",
    "method_report",
    "operating_alpha",
    "oracle",
    "run_benchmark",
    "topk_metrics",
]

ROUTERDC_DESCRIPTIONS = Path(__file__).parent / "routerdc_descriptions.yaml"
"""The RouterDC pool's descriptions, written from the models' public cards (the zero-shot method's default)."""

OPERATING_FRACTION = 0.2
"""Share of the training queries held out to choose a method's operating point (its alpha) on validation."""

REPORT_KEYS = ("setup", "models", "best_single", "oracle", "methods")
"""Top-level keys of the benchmark report, in order."""

METHOD_KEYS = (
    "quality",
    "cost",
    "alpha",
    "gap_recovered",
    "beats_best_single",
    "top1_hit",
    "top3_hit",
    "top3_agree",
    "curve",
    "aiq",
    "cost_at_best_single_quality",
    "cost_ratio_at_best_single_quality",
    "quality_at_best_single_cost",
    "validated",
    "shares",
    "per_task",
    "train_s",
    "predict_s",
)
"""Keys of each `methods.<name>` entry of the report, in order."""

_EPS = 1e-12


def _outcome(choice: np.ndarray, true: FloatArray, true_costs: FloatArray) -> tuple[float, float | None]:
    rows = np.flatnonzero(choice >= 0)
    quality = float(true[rows, choice[rows]].mean()) if len(rows) else math.nan
    picked = true_costs[rows, choice[rows]]
    cost = float(np.nanmean(picked)) if np.isfinite(picked).any() else None
    return quality, cost


def topk_metrics(pred: FloatArray, true: FloatArray, costs: FloatArray | None = None) -> dict[str, float | None]:
    """Return RouteMoA's Top-1-Hit, Top-3-Hit and Top-3-Agree over the queries that have a best model.

    Only models with a line count. A query whose known scores are all equal has no best model and is
    skipped. The true best may be several tied models (a hit is any of them); the true top three are the
    models scoring at least the third-highest score; Top-3-Agree is |predicted top 3 & true top 3| / 3
    (/ the number of models, when fewer than 3 answered). Predicted ties rank the cheaper model first.
    """
    order = np.argsort(costs, kind="stable") if costs is not None else np.arange(pred.shape[1])
    hit1: list[float] = []
    hit3: list[float] = []
    agree: list[float] = []
    for p_row, t_row in zip(pred, true, strict=True):
        known = np.isfinite(t_row)
        if known.sum() < 2 or np.nanmin(t_row) == np.nanmax(t_row):
            continue
        cols = order[known[order]]
        ranked = cols[np.argsort(-p_row[cols], kind="stable")]
        k = min(3, len(cols))
        best = set(np.flatnonzero(known & (t_row == np.nanmax(t_row))))
        third = np.sort(t_row[known])[-k]
        top_true = set(np.flatnonzero(known & (t_row >= third)))
        top_pred = set(ranked[:k].tolist())
        hit1.append(float(ranked[0] in best))
        hit3.append(float(bool(best & top_pred)))
        agree.append(len(top_pred & top_true) / k)
    if not hit1:
        return {"top1_hit": None, "top3_hit": None, "top3_agree": None}
    return {"top1_hit": float(np.mean(hit1)), "top3_hit": float(np.mean(hit3)), "top3_agree": float(np.mean(agree))}


def best_single(data: RoutingData) -> dict[str, Any]:
    """Return the model with the best mean score over its known test entries (ties: cheaper), with its cost."""
    known = np.isfinite(data.scores)
    means = np.where(known, data.scores, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    means = np.where(known.any(axis=0), means, -np.inf)
    costs = model_costs(data.costs)
    tie_cost = costs if costs is not None else np.zeros(len(data.models))
    col = min(range(len(data.models)), key=lambda m: (-means[m], tie_cost[m], m))
    cost = float(costs[col]) if costs is not None else None
    return {"model": data.models[col], "quality": float(means[col]), "cost": cost}


def oracle(data: RoutingData) -> dict[str, Any]:
    """Return the oracle: each query's best true score, ties to the model cheapest on that query."""
    known = np.isfinite(data.scores)
    rows = np.flatnonzero(known.any(axis=1))
    s = np.where(known, data.scores, -np.inf)[rows]
    fallback = model_costs(data.costs)
    c = data.costs[rows]
    if fallback is not None:
        c = np.where(np.isfinite(c), c, fallback)
    c = np.where(np.isfinite(c), c, 0.0)
    best = s.max(axis=1, keepdims=True)
    choice = np.argmin(np.where(s == best, c, np.inf), axis=1)
    quality = float(best.mean())
    picked = data.costs[rows, choice]
    cost = float(np.nanmean(picked)) if fallback is not None and np.isfinite(picked).any() else None
    return {"quality": quality, "cost": cost}


def operating_alpha(
    pred: FloatArray, data: RoutingData, costs: FloatArray, alphas: Sequence[float] = ALPHAS
) -> tuple[float, bool]:
    """Return (alpha, reached): the largest alpha whose routing of `data` reaches its best single quality.

    Routing reaches the bar when its mean score is at least the best single model's on the same queries.
    When no alpha does, the quality-maximising alpha 0 is returned with reached False.
    """
    bar = best_single(data)["quality"]
    available = np.isfinite(data.scores)
    reaching = [
        a for a in alphas if _outcome(route(pred, available, costs, a), data.scores, data.costs)[0] >= bar - _EPS
    ]
    return (max(reaching), True) if reaching else (0.0, False)


def _validated(
    pred: FloatArray, test: RoutingData, train_costs: FloatArray, bar_cost: float, alpha: float, reached: bool
) -> dict[str, Any]:
    quality, cost = _outcome(route(pred, np.isfinite(test.scores), train_costs, alpha), test.scores, test.costs)
    return {
        "alpha": _round(alpha, 8),
        "reached_on_validation": reached,
        "quality": _round(quality),
        "cost": _round(cost, 8),
        "cost_ratio": _round(cost / bar_cost, 4) if cost is not None and bar_cost else None,
    }


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits) + 0.0  # no "-0.0"


def method_report(
    pred: FloatArray,
    test: RoutingData,
    train_costs: FloatArray | None,
    reference: dict[str, Any],
    ceiling: dict[str, Any],
    single_costs: Sequence[float],
    alphas: Sequence[float] = ALPHAS,
) -> dict[str, Any]:
    """Return one method's entry of the report (see `METHOD_KEYS`), timings left for the caller.

    Args:
        pred: Predicted scores [test queries, models].
        test: The test split (true scores and costs).
        train_costs: Each model's mean cost per query on train (None: no costs; alpha 0 only).
        reference: `best_single(test)`.
        ceiling: `oracle(test)`.
        single_costs: Each single model's mean test cost (for the AIQ's cost range).
        alphas: Cost weights of the curve.
    """
    available = np.isfinite(test.scores)
    with_costs = train_costs is not None and reference["cost"] is not None
    grid = list(alphas) if with_costs else [0.0]
    curve: list[tuple[float, float, float | None]] = []
    for alpha in grid:
        choice = route(pred, available, train_costs, alpha)
        q_alpha, c_alpha = _outcome(choice, test.scores, test.costs)
        curve.append((alpha, q_alpha, c_alpha if with_costs else None))
    choice0 = route(pred, available, train_costs, 0.0)
    _, quality, cost = curve[0]
    span = ceiling["quality"] - reference["quality"]
    gap = (quality - reference["quality"]) / span if span > _EPS else None
    entry: dict[str, Any] = {"quality": quality, "cost": cost, "alpha": 0.0, "gap_recovered": gap}
    entry.update(topk_metrics(pred, test.scores, train_costs))
    entry["curve"] = [{"alpha": _round(a, 8), "quality": _round(q, 8), "cost": _round(c, 8)} for a, q, c in curve]
    bar_q, bar_c = reference["quality"], reference["cost"]
    if with_costs:
        points = [(c, q) for _, q, c in curve if c is not None]
        all_costs = [c for c, _ in points] + [c for c in single_costs if math.isfinite(c)]
        entry["aiq"] = aiq(points, min(all_costs), max(all_costs)) if points else None
        reaching = [c for c, q in points if q >= bar_q - _EPS]
        entry["cost_at_best_single_quality"] = min(reaching) if reaching else None
        entry["cost_ratio_at_best_single_quality"] = min(reaching) / bar_c if reaching and bar_c else None
        within = [q for c, q in points if c <= bar_c + _EPS]
        entry["quality_at_best_single_cost"] = max(within) if within else None
    else:
        entry["aiq"] = None
        entry["cost_at_best_single_quality"] = None
        entry["cost_ratio_at_best_single_quality"] = None
        entry["quality_at_best_single_cost"] = None
    cheaper = entry["cost_at_best_single_quality"]
    entry["beats_best_single"] = bool(quality > bar_q + _EPS or (cheaper is not None and cheaper < bar_c - _EPS))
    routed = choice0[choice0 >= 0]
    entry["shares"] = {
        test.models[m]: round(float(np.mean(routed == m)), 4) for m in range(len(test.models)) if np.any(routed == m)
    }
    per_task: dict[str, Any] = {}
    tasks = np.asarray(test.tasks)
    for task in sorted(set(test.tasks)):
        rows = np.flatnonzero(tasks == task)
        q, c = _outcome(choice0[rows], test.scores[rows], test.costs[rows])
        per_task[task] = {"n": len(rows), "quality": _round(q), "cost": _round(c, 8) if with_costs else None}
    entry["per_task"] = per_task
    for key in ("quality", "gap_recovered", "top1_hit", "top3_hit", "top3_agree", "aiq", "quality_at_best_single_cost"):
        entry[key] = _round(entry[key])
    for key in ("cost", "cost_at_best_single_quality"):
        entry[key] = _round(entry[key], 8)
    entry["cost_ratio_at_best_single_quality"] = _round(entry["cost_ratio_at_best_single_quality"], 4)
    entry["validated"] = None
    return entry


def run_benchmark(
    train: RoutingData,
    test: RoutingData,
    train_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    *,
    methods: Sequence[str],
    seed: int = 0,
    progress: bool = False,
    setup: dict[str, Any] | None = None,
    on_method: Callable[[str, ScorePredictor], None] | None = None,
    descriptions: Mapping[str, Description] | None = None,
    encoder: TextEncoder | None = None,
    domains: Mapping[str, Domain] | None = None,
) -> dict[str, Any]:
    """Train every method on `train`, route `test`, and return the report (keys: `REPORT_KEYS`).

    Args:
        train: Training queries.
        test: Test queries (same model columns as `train`).
        train_embeddings: Embeddings of `train`'s prompts, row-aligned.
        test_embeddings: Embeddings of `test`'s prompts, row-aligned.
        methods: Method names (see `moai.scorer.predictors.registry.METHODS`).
        seed: Seeds every method.
        progress: Show progress bars while training.
        setup: Extra facts for the report's `setup` (files, encoder, timings).
        on_method: Called with each fitted predictor (e.g. to print progress).
        descriptions: What each model declares, for the zero-shot method 'descriptions' (which reads no
            training score: its `fit` only fixes the column order).
        encoder: The encoder of the embeddings, with which 'descriptions' embeds the declared texts.
        domains: The kinds of query on which the descriptions state per-domain quality (`scores`).
    """
    if train.models != test.models:
        raise ValueError("train and test must have the same model columns")
    train_costs = model_costs(train.costs)
    reference = best_single(test)
    ceiling = oracle(test)
    test_costs = model_costs(test.costs)
    known = np.isfinite(test.scores)
    test_means = np.where(known, test.scores, 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    models_entry = {
        name: {
            "quality": _round(float(test_means[m])),
            "cost": _round(float(test_costs[m]), 8) if test_costs is not None else None,
            "train_cost": _round(float(train_costs[m]), 8) if train_costs is not None else None,
            "answered": int(known[:, m].sum()),
        }
        for m, name in enumerate(test.models)
    }
    single_costs = list(test_costs) if test_costs is not None else []
    report: dict[str, Any] = {
        "setup": {
            "seed": seed,
            "train_queries": len(train),
            "test_queries": len(test),
            "models": list(test.models),
            "has_costs": train_costs is not None and reference["cost"] is not None,
            "alphas": [round(a, 8) for a in ALPHAS] if train_costs is not None else [0.0],
            **(setup or {}),
        },
        "models": models_entry,
        "best_single": {k: (_round(v, 8) if isinstance(v, float) else v) for k, v in reference.items()},
        "oracle": {k: _round(v, 8) for k, v in ceiling.items()},
        "methods": {},
    }
    tasks = np.asarray(test.tasks)
    ref_col = test.models.index(reference["model"])
    report["best_single"]["per_task"] = {
        t: _round(float(np.nanmean(test.scores[tasks == t, ref_col]))) if known[tasks == t, ref_col].any() else None
        for t in sorted(set(test.tasks))
    }
    report["oracle"]["per_task"] = {
        t: _round(float(np.nanmax(np.where(known, test.scores, -np.inf)[tasks == t], axis=1).mean()))
        for t in sorted(set(test.tasks))
    }
    for name in methods:
        if name in ONLINE_METHODS:
            described, feedback = ONLINE_METHODS[name]
            priors = None
            if described:
                if descriptions is None:
                    raise ValueError(f"method {name!r} needs the descriptions (--descriptions)")
                zero_shot = make("descriptions", descriptions=descriptions, encoder=encoder, domains=domains)
                zero_shot.fit(test_embeddings[:1], test.scores[:1], test.models, seed)  # fixes the columns only
                priors = zero_shot.predict_embeddings(test_embeddings)
            report["methods"][name] = _online(
                test, test_embeddings, train_costs, reference, ceiling, single_costs, seed, priors, feedback
            )
            continue
        predictor = (
            make(name, descriptions=descriptions, encoder=encoder, domains=domains)
            if name == "descriptions"
            else make(name)
        )
        start = time.perf_counter()
        predictor.fit(
            train_embeddings, train.scores, train.models, seed, tasks=train.tasks, costs=train.costs, progress=progress
        )
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        pred = predictor.predict_embeddings(test_embeddings, tasks=test.tasks)
        predict_s = time.perf_counter() - start
        entry = method_report(pred, test, train_costs, reference, ceiling, single_costs)
        if report["setup"]["has_costs"] and train_costs is not None and predictor.trainable:
            entry["validated"] = _operating_point(name, train, train_embeddings, test_embeddings, test, seed)
        entry["train_s"] = round(train_s, 2)
        entry["predict_s"] = round(predict_s, 3)
        report["methods"][name] = {k: entry[k] for k in METHOD_KEYS}
        if on_method is not None:
            on_method(name, predictor)
    return report


def _online(
    test: RoutingData,
    test_embeddings: np.ndarray,
    train_costs: FloatArray | None,
    reference: dict[str, Any],
    ceiling: dict[str, Any],
    single_costs: Sequence[float],
    seed: int,
    priors: FloatArray | None = None,
    feedback: Literal["chosen", "all"] = "chosen",
) -> dict[str, Any]:
    """Return the online replay's entry: the method keys, with `online` (the curves) added."""
    from moai.scorer.benchmark.replay import online_entry

    start = time.perf_counter()
    online, pred = online_entry(test, test_embeddings, seed, priors=priors, feedback=feedback)
    elapsed = time.perf_counter() - start
    # The replay routes at alpha 0 (one choice a query), so its cost curve is that one point.
    entry = method_report(pred, test, train_costs, reference, ceiling, single_costs, alphas=[0.0])
    entry["train_s"], entry["predict_s"] = 0.0, round(elapsed, 3)
    return {k: entry[k] for k in METHOD_KEYS} | {"online": online}


def _operating_point(
    name: str,
    train: RoutingData,
    train_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    test: RoutingData,
    seed: int,
) -> dict[str, Any] | None:
    """Train on train less a validation share, choose alpha on that share, and route test with both."""
    fit_rows, val_rows = validation_rows(len(train), seed, OPERATING_FRACTION)
    if not len(val_rows):
        return None
    fit, val = train.subset(fit_rows), train.subset(val_rows)
    costs = model_costs(fit.costs)
    if costs is None:
        return None
    probe = make(name).fit(train_embeddings[fit_rows], fit.scores, fit.models, seed, tasks=fit.tasks, costs=fit.costs)
    alpha, reached = operating_alpha(probe.predict_embeddings(train_embeddings[val_rows], tasks=val.tasks), val, costs)
    pred = probe.predict_embeddings(test_embeddings, tasks=test.tasks)
    return _validated(pred, test, costs, best_single(test)["cost"], alpha, reached)


def fmt_cell(value: Any, spec: str) -> str:
    """Return a table cell: '-' for None, 'yes'/'NO' for a bool, else the value formatted by `spec`."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """Return rows as a plain-text table: the first row the header, ruled off; the first column left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _validated_cell(point: dict[str, Any] | None) -> str:
    """Return the validated point's cost ratio and quality, e.g. '41.0% @ .8761'."""
    if point is None or point["cost_ratio"] is None:
        return "-"
    return f"{point['cost_ratio']:.1%} @ {point['quality']:.4f}".replace("@ 0.", "@ .")


def format_table(report: dict[str, Any]) -> str:
    """Return the report as a plain-text table: one line per method, then the references."""
    bs, orc = report["best_single"], report["oracle"]
    header = (
        "method",
        "quality",
        "cost $",
        "gap rec.",
        "top1 hit",
        "top3 hit",
        "top3 agr",
        "AIQ",
        "$ @ best-1 q",
        "ratio",
        "val. ratio",
        "beats best-1",
    )
    rows = [header]
    for name, m in report["methods"].items():
        rows.append(
            (
                name,
                fmt_cell(m["quality"], ".4f"),
                fmt_cell(m["cost"], ".6f"),
                fmt_cell(m["gap_recovered"], ".1%"),
                fmt_cell(m["top1_hit"], ".3f"),
                fmt_cell(m["top3_hit"], ".3f"),
                fmt_cell(m["top3_agree"], ".3f"),
                fmt_cell(m["aiq"], ".4f"),
                fmt_cell(m["cost_at_best_single_quality"], ".6f"),
                fmt_cell(m["cost_ratio_at_best_single_quality"], ".1%"),
                _validated_cell(m["validated"]),
                fmt_cell(m["beats_best_single"], ""),
            )
        )
    rows.append(
        (f"best single ({bs['model']})", fmt_cell(bs["quality"], ".4f"), fmt_cell(bs["cost"], ".6f")) + ("",) * 9
    )
    rows.append(("oracle", fmt_cell(orc["quality"], ".4f"), fmt_cell(orc["cost"], ".6f")) + ("",) * 9)
    return aligned(rows)
