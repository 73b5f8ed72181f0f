from __future__ import annotations

import numpy as np
import pytest
from routing_fakes import FakeEncoder, two_clusters

from moai.scorer import Predictor
from moai.scorer.predictors.baselines import BestSinglePredictor, OraclePredictor, PerTaskPredictor, RandomPredictor
from moai.scorer.predictors.knn import KnnPredictor
from moai.scorer.predictors.registry import LEARNED, make
from moai.scorer.predictors.routemoa import contrast_masks
from moai.scorer.predictors.routoo import level_targets, levels_for

MODELS = ["A", "B", "C"]


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    emb, scores, _ = two_clusters(300, seed=1)
    scores[5, 1] = np.nan  # a hole: must be ignored, not learned as 0
    test_emb, _, test_cluster = two_clusters(200, seed=2)
    return emb, scores, test_emb, test_cluster, _


@pytest.mark.parametrize("method", LEARNED)
def test_each_scorer_learns_which_model_is_right_on_which_cluster(method: str, clusters: tuple) -> None:
    emb, scores, test_emb, test_cluster, _ = clusters
    predictor = make(method).fit(emb, scores, MODELS, seed=0)
    pred = predictor.predict_embeddings(test_emb)
    assert pred.shape == (200, 3)
    assert pred.min() >= 0 and pred.max() <= 1
    top1_hit = np.mean(pred.argmax(axis=1) == test_cluster)
    assert top1_hit >= 0.9


@pytest.mark.parametrize("method", LEARNED)
def test_each_scorer_is_deterministic_for_a_seed(method: str, clusters: tuple) -> None:
    emb, scores, test_emb, _, _ = clusters
    first = make(method).fit(emb, scores, MODELS, seed=3).predict_embeddings(test_emb)
    second = make(method).fit(emb, scores, MODELS, seed=3).predict_embeddings(test_emb)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("method", ["routoo", "routemoa", "mf"])
def test_another_seed_trains_another_network(method: str, clusters: tuple) -> None:
    emb, scores, test_emb, _, _ = clusters
    first = make(method).fit(emb, scores, MODELS, seed=3).predict_embeddings(test_emb)
    other = make(method).fit(emb, scores, MODELS, seed=4).predict_embeddings(test_emb)
    assert not np.array_equal(first, other)


def test_predict_encodes_queries_and_orders_columns_by_the_models_asked(fake_encoder: FakeEncoder) -> None:
    texts = [f"alpha topic {i}" if i % 2 == 0 else f"beta topic {i}" for i in range(60)]
    scores = np.array([[1.0, 0.0] if i % 2 == 0 else [0.0, 1.0] for i in range(60)])
    predictor = KnnPredictor(k=5, encoder=fake_encoder)
    predictor.fit(fake_encoder.encode(texts), scores, ["A", "B"])
    _: Predictor = predictor  # satisfies the protocol (checked by mypy)
    rows = predictor.predict(["alpha topic new", "beta topic new"], ["B", "A"])
    assert rows[0][1] > rows[0][0] and rows[1][0] > rows[1][1]
    assert predictor.predict([], ["A"]) == []
    with pytest.raises(ValueError, match="unknown model 'Z'; valid: A, B"):
        predictor.predict(["x"], ["Z"])


def test_knn_means_only_over_neighbours_that_have_a_score() -> None:
    emb = np.eye(4, dtype=np.float32)[[0, 0, 0, 1]]
    scores = np.array([[1.0, np.nan], [1.0, 0.0], [0.0, np.nan], [0.0, 1.0]])
    pred = KnnPredictor(k=2).fit(emb, scores, ["a", "b"]).predict_embeddings(np.eye(4, dtype=np.float32)[[0]])
    # Model b's two nearest rows *with a score* are rows 1 and 3.
    assert pred[0, 1] == pytest.approx(0.5)


def test_baselines() -> None:
    emb = np.zeros((4, 2), dtype=np.float32)
    scores = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [np.nan, 1.0]])
    tasks = ["x", "x", "y", "y"]
    best = BestSinglePredictor().fit(emb, scores, ["a", "b"])
    np.testing.assert_allclose(best.predict_embeddings(emb[:1]), [[2 / 3, 0.5]])
    per_task = PerTaskPredictor().fit(emb, scores, ["a", "b"], tasks=tasks)
    np.testing.assert_allclose(
        per_task.predict_embeddings(emb[:3], tasks=["x", "y", "new"]), [[1, 0], [0, 1], [2 / 3, 0.5]]
    )
    rand = RandomPredictor().fit(emb, scores, ["a", "b"], seed=5)
    np.testing.assert_array_equal(
        rand.predict_embeddings(emb), RandomPredictor().fit(emb, scores, "ab", seed=5).predict_embeddings(emb)
    )
    oracle = OraclePredictor().fit(emb, scores, ["a", "b"])
    np.testing.assert_array_equal(oracle.predict_embeddings(emb), np.nan_to_num(scores))


def test_routoo_levels_split_soft_scores_between_neighbouring_levels() -> None:
    import torch

    assert levels_for(np.array([[0.0, 1.0], [np.nan, 1.0]])) == 2
    assert levels_for(np.array([[0.3, 1.0]])) == 5
    target = level_targets(torch.tensor([0.3, 1.0, 0.5]), 3)
    np.testing.assert_allclose(target.numpy(), [[0.4, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], atol=1e-6)


def test_routemoa_contrasts_top_third_with_bottom_third() -> None:
    scores = np.array([[1.0, 0.8, 0.5, 0.2, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, np.nan, 0, 0, 0, 1]])
    pos, neg = contrast_masks(scores)
    assert pos[0].tolist() == [True, True, False, False, False, False]
    assert neg[0].tolist() == [False, False, False, False, True, True]
    assert not pos[1].any() and not neg[1].any()
    assert pos[2].tolist() == [True, False, False, False, False, True]
    assert neg[2].tolist() == [False, False, True, True, True, False]
