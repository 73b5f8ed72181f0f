from __future__ import annotations

import numpy as np
import pytest
from routing_fakes import two_clusters

from moai.scorer.predictors.blend import COMPONENTS, BlendPredictor, fold_rows

MODELS = ["A", "B", "C"]


def tasks_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two tasks in two clusters: A is right on 'math' queries and B on 'history' ones, C on neither."""
    emb, _, cluster = two_clusters(n, seed)
    rng = np.random.default_rng(seed)
    scores = np.zeros((n, 3))
    scores[:, 0] = np.where(cluster == 0, rng.random(n) < 0.8, rng.random(n) < 0.3)
    scores[:, 1] = np.where(cluster == 1, rng.random(n) < 0.8, rng.random(n) < 0.3)
    scores[:, 2] = rng.random(n) < 0.1
    return emb, scores, ["math" if c == 0 else "history" for c in cluster]


def test_fold_rows_hold_out_every_row_once() -> None:
    folds = fold_rows(103, seed=4)
    assert len(folds) == 5
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(103))
    for fit, out in folds:
        assert not set(fit.tolist()) & set(out.tolist())
        assert len(fit) + len(out) == 103
    assert [h.tolist() for _, h in fold_rows(103, seed=4)] == [h.tolist() for _, h in folds]
    assert fold_rows(19, seed=0) == []


def test_the_task_is_predicted_from_the_embedding_never_read() -> None:
    emb, scores, tasks = tasks_data(400, seed=1)
    test_emb, _, test_tasks = tasks_data(200, seed=2)
    predictor = BlendPredictor().fit(emb, scores, MODELS, seed=0, tasks=tasks)
    assert predictor.tasks == ("history", "math")
    pred = predictor.predict_embeddings(test_emb)
    # Gold labels (here deliberately wrong) change nothing: the blend predicts the task itself.
    wrong = ["math" if t == "history" else "history" for t in test_tasks]
    np.testing.assert_array_equal(predictor.predict_embeddings(test_emb, tasks=wrong), pred)
    right = np.where(np.asarray(test_tasks) == "math", 0, 1)
    assert np.mean(pred.argmax(axis=1) == right) >= 0.95
    posterior = predictor.task_posterior(test_emb)
    assert np.mean((posterior["math"] > 0.5) == (right == 0)) >= 0.95


def test_weights_form_a_convex_blend_chosen_on_validation() -> None:
    emb, scores, tasks = tasks_data(300, seed=3)
    predictor = BlendPredictor().fit(emb, scores, MODELS, seed=0, tasks=tasks)
    assert predictor.weights.sum() == pytest.approx(1.0)
    assert (predictor.weights >= 0).all()
    info = predictor.validation
    assert info["objective"] == "quality"
    assert set(info["single"]) == set(COMPONENTS)
    # The blend is chosen among grid points that include each component alone.
    assert info["objective_value"] >= max(info["single"].values()) - 1e-9
    assert predictor.c in (0.1, 1.0) and predictor.k in (20, 50, 100, 200)


def test_costs_switch_the_objective_to_aiq() -> None:
    emb, scores, tasks = tasks_data(200, seed=5)
    costs = np.tile([0.01, 0.001, 0.0001], (200, 1))
    predictor = BlendPredictor().fit(emb, scores, MODELS, seed=0, tasks=tasks, costs=costs)
    assert predictor.validation["objective"] == "aiq"
    no_costs = BlendPredictor().fit(emb, scores, MODELS, seed=0, tasks=tasks, costs=np.full((200, 3), np.nan))
    assert no_costs.validation["objective"] == "quality"


def test_few_queries_blend_equally_and_holes_are_not_zeros() -> None:
    emb, scores, tasks = tasks_data(12, seed=6)
    scores[:, 2] = np.nan
    scores[0, 2] = 1.0
    predictor = BlendPredictor().fit(emb, scores, MODELS, seed=0, tasks=tasks)
    np.testing.assert_allclose(predictor.weights, [1 / 3] * 3)
    assert predictor.validation == {}
    # C's only known score is 1: every part predicts it high, never as a row of zeros.
    assert predictor.predict_embeddings(emb)[:, 2].min() > 0.5


def test_an_untrained_blend_says_so() -> None:
    with pytest.raises(ValueError, match="not trained"):
        BlendPredictor().predict_embeddings(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="folds must be >= 2"):
        BlendPredictor(folds=1)
