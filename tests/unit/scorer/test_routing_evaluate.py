from __future__ import annotations

import numpy as np
import pytest

from moai.scorer.benchmark.evaluate import (
    best_single,
    method_report,
    operating_alpha,
    oracle,
    topk_metrics,
)
from moai.scorer.data.routing import RoutingData
from moai.scorer.objective import aiq, route, upper_hull

NAN = np.nan


def tiny() -> RoutingData:
    # A costs $1 a query, B $0.1. A is the best single model (0.75 vs 0.5).
    scores = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    costs = np.tile([1.0, 0.1], (4, 1))
    return RoutingData(
        ids=("q1", "q2", "q3", "q4"),
        sources=("f",) * 4,
        prompts=("p1", "p2", "p3", "p4"),
        tasks=("x", "x", "y", "y"),
        models=("A", "B"),
        scores=scores,
        costs=costs,
    )


PRED = np.array([[0.9, 0.2], [0.8, 0.7], [0.4, 0.6], [0.7, 0.65]])


def test_best_single_and_oracle() -> None:
    data = tiny()
    assert best_single(data) == {"model": "A", "quality": 0.75, "cost": 1.0}
    # q2 is a tie: the oracle takes the cheaper B.
    assert oracle(data) == {"quality": 1.0, "cost": pytest.approx((1 + 0.1 + 0.1 + 1) / 4)}


def test_route_weighs_predictions_by_cost_and_breaks_ties_to_the_cheaper_model() -> None:
    available = np.ones((4, 2), dtype=bool)
    costs = np.array([1.0, 0.1])
    assert route(PRED, available, costs, 0.0).tolist() == [0, 0, 1, 0]
    # B wins q4 once 10**alpha > 0.7/0.65 (alpha > 0.032), q2 past 0.058, q1 past 0.653.
    assert route(PRED, available, costs, 0.04).tolist() == [0, 0, 1, 1]
    assert route(PRED, available, costs, 0.1).tolist() == [0, 1, 1, 1]
    assert route(PRED, available, costs, 1.0).tolist() == [1, 1, 1, 1]
    assert route(np.array([[0.5, 0.5]]), available[:1], costs).tolist() == [1]
    holes = np.array([[False, True]])
    assert route(np.array([[0.9, 0.1]]), holes, costs).tolist() == [1]


def test_method_report_on_a_hand_computed_example() -> None:
    data = tiny()
    ref, ceiling = best_single(data), oracle(data)
    entry = method_report(PRED, data, np.array([1.0, 0.1]), ref, ceiling, [1.0, 0.1], alphas=[0.0, 0.04, 0.1, 1.0])
    assert entry["quality"] == 1.0
    assert entry["cost"] == pytest.approx(0.775)
    assert entry["gap_recovered"] == 1.0
    assert [(p["alpha"], p["quality"], p["cost"]) for p in entry["curve"]] == [
        (0.0, 1.0, 0.775),
        (0.04, 0.75, 0.55),
        (0.1, 0.75, 0.325),
        (1.0, 0.5, 0.1),
    ]
    assert entry["cost_at_best_single_quality"] == pytest.approx(0.325)
    assert entry["cost_ratio_at_best_single_quality"] == pytest.approx(0.325)
    assert entry["quality_at_best_single_cost"] == 1.0
    # Hull (0.1, .5) -> (.325, .75) -> (.775, 1) then flat to 1.0, over costs [0.1, 1.0].
    area = 0.225 * (0.5 + 0.75) / 2 + 0.45 * (0.75 + 1.0) / 2 + 0.225 * 1.0
    assert entry["aiq"] == pytest.approx(area / 0.9, abs=1e-6)
    assert entry["beats_best_single"] is True
    assert entry["shares"] == {"A": 0.75, "B": 0.25}
    assert entry["per_task"] == {
        "x": {"n": 2, "quality": 1.0, "cost": 1.0},
        "y": {"n": 2, "quality": 1.0, "cost": 0.55},
    }
    # q2 (a tie) is skipped; on the others the predicted top-1 is a best model.
    assert (entry["top1_hit"], entry["top3_hit"], entry["top3_agree"]) == (1.0, 1.0, 1.0)


def test_a_method_below_the_best_single_model_says_so() -> None:
    data = tiny()
    worse = np.array([[0.1, 0.9]] * 4)
    entry = method_report(worse, data, np.array([1.0, 0.1]), best_single(data), oracle(data), [1.0, 0.1])
    assert entry["quality"] == 0.5
    assert entry["gap_recovered"] == -1.0
    assert entry["beats_best_single"] is False
    assert entry["cost_at_best_single_quality"] is None


def test_without_costs_only_alpha_zero_is_run() -> None:
    data = tiny()
    data = RoutingData(**{**data.__dict__, "costs": np.full((4, 2), NAN)})
    ref = best_single(data)
    assert ref == {"model": "A", "quality": 0.75, "cost": None}
    entry = method_report(PRED, data, None, ref, oracle(data), [])
    assert entry["curve"] == [{"alpha": 0.0, "quality": 1.0, "cost": None}]
    assert entry["cost"] is None
    assert entry["aiq"] is None
    assert entry["cost_at_best_single_quality"] is None
    assert entry["quality_at_best_single_cost"] is None
    assert entry["beats_best_single"] is True


def test_topk_hit_and_agree() -> None:
    true = np.array(
        [
            [1.0, 0.5, 0.2, 0.0],  # best {0}; top3 {0, 1, 2}
            [0.0, 1.0, 1.0, 0.0],  # best {1, 2}; third-highest is 0, so every model is "top 3"
            [1.0, 1.0, 1.0, 1.0],  # no best model: skipped
            [NAN, 0.3, 0.9, 0.1],  # model 0 has no line: ranked among 1-3 only
        ]
    )
    pred = np.array([[0.1, 0.9, 0.8, 0.7], [0.9, 0.8, 0.1, 0.2], [0.0, 0.0, 0.0, 0.0], [0.99, 0.5, 0.6, 0.4]])
    metrics = topk_metrics(pred, true)
    assert metrics["top1_hit"] == pytest.approx(1 / 3)
    assert metrics["top3_hit"] == pytest.approx(2 / 3)
    assert metrics["top3_agree"] == pytest.approx((2 / 3 + 1 + 1) / 3)


def test_aiq_and_hull() -> None:
    # A point under the chord and a costlier, worse point leave the hull.
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8)]
    assert upper_hull(points) == [(1.0, 0.5), (3.0, 0.9)]
    # Over [0, 4]: nothing below cost 1, the chord from 1 to 3, then flat at 0.9.
    assert aiq(points, 0.0, 4.0) == pytest.approx((2 * (0.5 + 0.9) / 2 + 0.9) / 4)
    assert aiq([(1.0, 0.7)], 1.0, 1.0) == 0.7


def test_operating_alpha_is_the_cheapest_grid_point_reaching_the_best_single_quality() -> None:
    data = tiny()
    grid = [0.0, 0.04, 0.1, 1.0]
    # Qualities along the grid: 1.0, 0.75, 0.75, 0.5 against the best single model's 0.75.
    assert operating_alpha(PRED, data, np.array([1.0, 0.1]), grid) == (0.1, True)
    # Predictions that send every query to the wrong model never reach it: alpha 0, flagged.
    assert operating_alpha(1 - data.scores, data, np.array([1.0, 0.1]), grid) == (0.0, False)


def test_the_benchmark_reports_a_validated_operating_point() -> None:
    from moai.scorer.benchmark.evaluate import run_benchmark

    rng = np.random.default_rng(0)
    n = 200
    topic = rng.integers(0, 2, n)
    emb = np.eye(4, dtype=np.float32)[topic] + 0.1 * rng.normal(size=(n, 4)).astype(np.float32)
    scores = np.stack([topic == 0, np.ones(n, bool)], axis=1).astype(float)
    data = RoutingData(
        ids=tuple(f"q{i}" for i in range(n)),
        sources=("f",) * n,
        prompts=("p",) * n,
        tasks=tuple(str(t) for t in topic),
        models=("cheap", "pricey"),
        scores=scores,
        costs=np.tile([0.001, 0.01], (n, 1)),
    )
    train, test = data.subset(range(150)), data.subset(range(150, n))
    report = run_benchmark(train, test, emb[:150], emb[150:], methods=["knn", "best_single"], seed=0)
    point = report["methods"]["knn"]["validated"]
    # 'cheap' is right on topic 0: the validated alpha sends those queries there, at full quality.
    assert point["reached_on_validation"] is True
    assert point["quality"] == 1.0
    assert point["cost_ratio"] < 0.7
    assert report["methods"]["best_single"]["validated"]["quality"] == 1.0
