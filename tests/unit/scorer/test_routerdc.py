from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scorer.encoder import default_model_path
from scorer.routerdc import RouterDCConfig, RouterDCPredictor, rank_masks

TEXTS = [
    "What is 2 + 2?",
    "Solve for x: 3x = 12.",
    "Write a python function that reverses a list.",
    "def add(a, b): return the sum",
    "Which planet is closest to the sun?",
    "What gas do plants absorb?",
    "Compute 17 * 3.",
    "Implement binary search in python.",
]
TASKS = ["math", "math", "code", "code", "science", "science", "math", "code"]


@pytest.fixture
def tiny_model(tmp_path: Path) -> str:
    """A one-layer BERT with MiniLM's tokenizer: random weights, built offline in a second."""
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny"
    folder.mkdir()
    src = default_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


def _scores() -> np.ndarray:
    # Model 0 answers math, model 1 code, model 2 science.
    s = np.zeros((len(TEXTS), 3))
    for i, task in enumerate(TASKS):
        s[i, ["math", "code", "science"].index(task)] = 1.0
    return s


def test_rank_masks_keep_ties_with_their_group_and_skip_flat_rows() -> None:
    scores = np.array([[1.0, 1.0, 0.0, 0.0, 0.5], [0.3, 0.3, 0.3, 0.3, 0.3], [0.9, np.nan, 0.1, 0.5, 0.2]])
    pos, neg = rank_masks(scores, top_k=1)
    assert pos.tolist() == [[True, True, False, False, False], [False] * 5, [True, False, False, False, False]]
    assert neg.tolist() == [[False, False, True, True, False], [False] * 5, [False, False, True, False, False]]


def test_fit_is_deterministic_and_predicts_text_only(tiny_model: str) -> None:
    config = RouterDCConfig(epochs=2, batch_size=4, max_length=16, top_k=1, model_path=tiny_model)
    models = ["m0", "m1", "m2"]
    a = RouterDCPredictor(config).fit_texts(TEXTS, _scores(), models, seed=3, tasks=TASKS)
    b = RouterDCPredictor(config).fit_texts(TEXTS, _scores(), models, seed=3, tasks=TASKS)
    pa, pb = a.predict_texts(TEXTS), b.predict_texts(TEXTS)
    assert pa.shape == (len(TEXTS), 3)
    assert ((pa >= 0) & (pa <= 1)).all()
    np.testing.assert_array_equal(pa, pb)
    assert a.predict(TEXTS[:2], ["m2", "m0"]) == [[float(r[2]), float(r[0])] for r in pa[:2]]
    assert len(a.history["train_loss"]) == 2
    with pytest.raises(ValueError, match="predict_texts"):
        a.predict_embeddings(np.zeros((1, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="fit_texts"):
        RouterDCPredictor(config).fit(np.zeros((8, 32), dtype=np.float32), _scores(), models)


def test_state_round_trips(tiny_model: str) -> None:
    config = RouterDCConfig(epochs=1, batch_size=4, max_length=16, model_path=tiny_model)
    fitted = RouterDCPredictor(config).fit_texts(TEXTS, _scores(), ["m0", "m1", "m2"], seed=0, tasks=TASKS)
    arrays, settings = fitted.state()
    again = RouterDCPredictor.from_state(arrays, settings)
    assert again.models == fitted.models
    np.testing.assert_allclose(again.predict_texts(TEXTS), fitted.predict_texts(TEXTS), atol=1e-6)
