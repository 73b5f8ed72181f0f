from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from routing_fakes import two_clusters

from moai.scorer import checkpoint
from moai.scorer.predictors.registry import LEARNED, make


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    emb, scores, _ = two_clusters(240, seed=11)
    test_emb, _, test_cluster = two_clusters(100, seed=12)
    return emb, scores, test_emb, test_cluster


@pytest.mark.parametrize("method", [*LEARNED, "best_single", "per_task", "random"])
def test_checkpoints_round_trip(method: str, data: tuple, tmp_path: Path) -> None:
    emb, scores, test_emb, _ = data
    tasks = ["x" if i % 2 else "y" for i in range(len(emb))]
    predictor = make(method).fit(emb, scores, ["A", "B", "C"], seed=2, tasks=tasks)
    folder = checkpoint.save(predictor, tmp_path / "ckpt", data={"hash": "abc"}, metrics={"quality": 0.5})
    assert sorted(p.name for p in folder.iterdir()) == ["scorer.json", "weights.safetensors"]
    meta = json.loads((folder / "scorer.json").read_text())
    assert meta["method"] == method
    assert meta["models"] == ["A", "B", "C"]
    assert meta["seed"] == 2
    assert meta["data"] == {"hash": "abc"}
    assert meta["metrics"] == {"quality": 0.5}
    assert meta["encoder"].startswith("all-MiniLM-L6-v2")
    loaded = checkpoint.load(folder)
    assert type(loaded) is type(predictor)
    assert loaded.models == predictor.models
    np.testing.assert_array_equal(loaded.predict_embeddings(test_emb), predictor.predict_embeddings(test_emb))


def test_routoo_checkpoint_records_k(data: tuple, tmp_path: Path) -> None:
    emb, scores, _, _ = data
    folder = checkpoint.save(make("routoo").fit(emb, scores, ["A", "B", "C"]), tmp_path / "ckpt")
    assert checkpoint.read_metadata(folder)["config"]["levels"] == 2


def test_a_folder_that_is_no_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a scorer checkpoint"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("method", ["routoo", "routemoa", "mf"])
def test_add_model_trains_only_the_new_models_embedding(method: str, data: tuple) -> None:
    emb, scores, test_emb, test_cluster = data
    predictor = make(method).fit(emb, scores[:, :2], ["A", "B"], seed=0)
    before_arrays, _ = predictor.state()
    before = predictor.predict_embeddings(test_emb)
    # The new model is right on cluster 0 only, like A.
    new_scores = (scores[:, 0] == 1).astype(float)
    predictor.add_model("D", emb, new_scores, seed=0)
    after_arrays, config = predictor.state()
    assert predictor.models == ("A", "B", "D")
    assert config["models"] == ["A", "B", "D"]
    for name, old in before_arrays.items():
        new = after_arrays[name]
        if name in ("model_emb", "model_bias"):
            np.testing.assert_array_equal(new[:2], old)
            assert new.shape[0] == 3
        else:
            np.testing.assert_array_equal(new, old)
    after = predictor.predict_embeddings(test_emb)
    np.testing.assert_array_equal(after[:, :2], before)
    on_zero = after[test_cluster == 0, 2].mean()
    on_one = after[test_cluster == 1, 2].mean()
    assert on_zero > on_one + 0.4


def test_add_model_to_knn_uses_the_new_models_rows(data: tuple) -> None:
    emb, scores, test_emb, test_cluster = data
    predictor = make("knn").fit(emb[:200], scores[:200, :2], ["A", "B"])
    before = predictor.predict_embeddings(test_emb)
    # Half its rows are queries the scorer already holds, half are new.
    predictor.add_model("D", emb[100:], (scores[100:, 0] == 1).astype(float))
    after = predictor.predict_embeddings(test_emb)
    np.testing.assert_array_equal(after[:, :2], before)
    assert after[test_cluster == 0, 2].mean() > 0.8 > 0.2 > after[test_cluster == 1, 2].mean()
    assert predictor.train_embeddings.shape[0] == 240


def test_add_model_refuses_a_model_already_in_the_pool(data: tuple) -> None:
    emb, scores, _, _ = data
    predictor = make("mf").fit(emb, scores, ["A", "B", "C"])
    with pytest.raises(ValueError, match="already in the pool"):
        predictor.add_model("A", emb, scores[:, 0])
    with pytest.raises(NotImplementedError):
        make("random").fit(emb, scores, ["A", "B", "C"]).add_model("D", emb, scores[:, 0])
