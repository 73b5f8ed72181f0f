from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from routing_fakes import write_lines

from moai.scorer.universe import coverage, greedy_universe, utilities

NAN = np.nan


def correlated_pool(n: int = 200, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Return scores for 'strong' and 'strong-twin' (right on the same 70%) and 'other' (right on the rest)."""
    rng = np.random.default_rng(seed)
    easy = rng.random(n) < 0.7
    twin = easy.copy()
    twin[np.flatnonzero(easy)[:3]] = False  # nearly identical, a little weaker
    scores = np.stack([easy, twin, ~easy], axis=1).astype(float)
    return scores, ["strong", "strong-twin", "other"]


def test_greedy_prefers_a_complementary_model_over_a_correlated_strong_one() -> None:
    scores, models = correlated_pool()
    picks = greedy_universe(scores, models, 2)
    assert [p.model for p in picks] == ["strong", "other"]
    assert picks[0].gain == pytest.approx(scores[:, 0].mean())
    assert picks[1].coverage == pytest.approx(1.0)
    assert picks[1].quality == pytest.approx(1.0)
    # The twin, though stronger alone than 'other', adds nothing once 'strong' is in.
    assert greedy_universe(scores, models, 3)[2].gain == pytest.approx(0.0)


def test_gains_shrink_and_the_full_pool_reaches_the_oracle() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((300, 6)) ** 2
    picks = greedy_universe(scores, [f"m{i}" for i in range(6)], 6)
    gains = [p.gain for p in picks]
    assert all(a >= b - 1e-12 for a, b in pairwise(gains))
    assert picks[-1].coverage == pytest.approx(scores.max(axis=1).mean())
    assert sum(gains) == pytest.approx(picks[-1].coverage)
    assert sorted(p.model for p in picks) == [f"m{i}" for i in range(6)]


def test_greedy_is_optimal_on_a_hand_made_example() -> None:
    # a covers q1-q2, b covers q3-q4, c covers q2-q3 (best alone with a tie: a wins on column order).
    scores = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 1], [0, 1, 0]], dtype=float)
    picks = greedy_universe(scores, ["a", "b", "c"], 2)
    assert [(p.model, p.gain, p.coverage) for p in picks] == [("a", 0.5, 0.5), ("b", 0.5, 1.0)]


def test_a_cost_weight_trades_quality_for_price() -> None:
    scores = np.array([[1.0, 0.8], [1.0, 0.8], [1.0, 0.8]])
    costs = np.tile([0.01, 0.001], (3, 1))
    assert greedy_universe(scores, ["pricey", "cheap"], 1)[0].model == "pricey"
    pick = greedy_universe(scores, ["pricey", "cheap"], 1, costs=costs, cost_weight=0.5)[0]
    assert pick.model == "cheap"
    # u = 0.8 - 0.5 * 0.001 / 0.01 = 0.75 on every query.
    assert pick.gain == pytest.approx(0.75)
    assert pick.quality == pytest.approx(0.8)
    assert pick.cost == pytest.approx(0.001)


def test_ties_go_to_the_cheaper_model() -> None:
    scores = np.array([[1.0, 1.0], [0.0, 0.0]])
    costs = np.tile([0.02, 0.01], (2, 1))
    assert greedy_universe(scores, ["a", "b"], 1, costs=costs)[0].model == "b"
    assert greedy_universe(scores, ["a", "b"], 1)[0].model == "a"


def test_missing_lines_cover_nothing_and_missing_costs_take_the_mean() -> None:
    scores = np.array([[1.0, NAN], [NAN, 1.0], [1.0, 1.0]])
    assert utilities(scores).tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    costs = np.array([[1.0, NAN], [NAN, 1.0], [3.0, 1.0]])
    u = utilities(scores, costs, cost_weight=1.0)
    # Mean costs 2 and 1; the dearest model's mean (2) scales them.
    assert u.tolist() == [[0.5, 0.0], [0.0, 0.5], [-0.5, 0.5]]
    assert coverage(u, [0, 1]) == pytest.approx(0.5)
    assert coverage(u, []) == 0.0


@pytest.mark.parametrize(
    ("size", "kwargs", "message"),
    [
        (0, {}, "between 1 and 2"),
        (3, {}, "between 1 and 2"),
        (1, {"cost_weight": -1.0}, "cost weight"),
        (1, {"cost_weight": 1.0}, "needs a known cost"),
    ],
)
def test_bad_input_is_a_value_error(size: int, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        greedy_universe(np.ones((2, 2)), ["a", "b"], size, **kwargs)


def test_cli_prints_the_picks_in_order(tmp_path: Path, capsys: Any) -> None:
    from moai.cli import main

    lines = []
    scores, models = correlated_pool(60)
    for q, row in enumerate(scores):
        for model, score in zip(models, row, strict=True):
            cost = 0.01 if model != "other" else 0.001
            lines.append({"id": f"q{q}", "prompt": "p", "task": "t", "model": model, "score": score, "cost": cost})
    path = write_lines(tmp_path / "pool.jsonl", lines)
    assert main(["scorer", "universe", "--data", str(path), "--size", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "universe of 2 from 3 models (60 queries):"
    assert out[1].split()[:2] == ["1.", "strong"]
    assert out[2].split()[:2] == ["2.", "other"]
    assert "coverage 1.0000" in out[2]
    assert out[-1] == "all 3 models: best-of-set quality 1.0000"
    assert main(["scorer", "universe", "--data", str(path), "--size", "5"]) == 2
    assert "between 1 and 3" in capsys.readouterr().err
