"""A model added to a trained pool with only its description: does it get a usable score?

For each model of the RouterDC pool in turn: a kNN scorer is trained on the training split without that
model's column (the pool before the model was added); the model is then added by its description alone
(`BlendedScorer`, as `gate.scorer: <checkpoint>` with a described model the checkpoint lacks), from the
shipped `scorer/benchmark/routerdc_descriptions.yaml`. The test split is routed three ways: kNN on the six
models (the new one never chosen), kNN plus the described newcomer, and kNN trained on all seven (the
newcomer with training data). Static encoder, seed 0, the split of `moai bench routing`.

Run from the repository root:  python bench/new_model.py [--out bench/results/new_model.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from moai.scorer.benchmark.evaluate import ROUTERDC_DESCRIPTIONS
from moai.scorer.data.routing import load, split_rows
from moai.scorer.data.texts import query_texts
from moai.scorer.encoders import make_encoder
from moai.scorer.encoders.sentence import cached_encode
from moai.scorer.predictors.descriptions import BlendedScorer, DescriptionScorer, read_descriptions
from moai.scorer.predictors.knn import KnnPredictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "routerdc_7b.jsonl.gz"


def quality(scores: np.ndarray, pred: np.ndarray) -> float:
    """Return the mean true score of each query's top-predicted model."""
    return float(np.nan_to_num(scores)[np.arange(len(scores)), pred.argmax(axis=1)].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="RouterDC routing data")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    data = load([args.data])
    train_rows, test_rows = split_rows(data, [args.data], [args.data], 0)
    train, test = data.subset(train_rows), data.subset(test_rows)
    encoder = make_encoder("static-minilm")
    e_train = cached_encode(encoder, query_texts(train.prompts, train.tasks))
    e_test = cached_encode(encoder, query_texts(test.prompts, test.tasks))
    described = read_descriptions(ROUTERDC_DESCRIPTIONS)
    models = list(data.models)
    full = KnnPredictor(encoder=encoder).fit(e_train, train.scores, models, seed=0)
    q_full = quality(test.scores, full.predict_embeddings(e_test))
    lines = [
        "# A model added to a trained pool by its description alone (`python bench/new_model.py`)",
        "",
        f"RouterDC, {len(test)} test queries, static encoder, kNN; all seven trained: {q_full:.4f}.",
        "",
        "| new model | share routed to it | kNN on the other six | + its description | gain |",
        "|---|---:|---:|---:|---:|",
    ]
    for j, new in enumerate(models):
        keep = [i for i in range(len(models)) if i != j]
        six = KnnPredictor(encoder=encoder).fit(e_train, train.scores[:, keep], [models[i] for i in keep], seed=0)
        q_six = quality(test.scores[:, keep], six.predict_embeddings(e_test))
        blend = BlendedScorer(six, DescriptionScorer({new: described[new]}, encoder=encoder), weight=0.0)
        pred = blend.predict_embeddings(e_test)
        order = [blend.models.index(m) for m in models]  # back to the data's column order
        pred = pred[:, order]
        q_blend = quality(test.scores, pred)
        share = float((pred.argmax(axis=1) == j).mean())
        lines.append(f"| {new} | {share:.1%} | {q_six:.4f} | {q_blend:.4f} | {q_blend - q_six:+.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
