"""Helpers for the routing scorer tests: synthetic two-cluster data, a fake encoder, routing files."""

from __future__ import annotations

import argparse
import gzip
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class FakeEncoder:
    """A bag-of-words hashing encoder: deterministic, instant, no weights."""

    name = "fake-bow-32"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
        self.calls = 0

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rng = np.random.default_rng(zlib.crc32(word.encode()))
                out[i] += rng.normal(size=self.dim).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def two_clusters(n: int, seed: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (embeddings, scores [n, 3], cluster): model A is right on cluster 0, B on cluster 1, C half."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, n)
    centres = np.eye(dim)[:2]
    emb = centres[cluster] + 0.35 * rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = np.zeros((n, 3))
    scores[cluster == 0, 0] = 1.0
    scores[cluster == 1, 1] = 1.0
    scores[:, 2] = (rng.random(n) < 0.5).astype(float)
    return emb.astype(np.float32), scores, cluster


def routing_lines(n_queries: int = 60, seed: int = 0, ids: str = "split") -> list[dict[str, Any]]:
    """Return uniform routing lines: 'cheap' is right on math queries, 'pricey' on history, 'meh' on half.

    ids='split' names them train-/test- (2/3 train), anything else plain q-<i>.
    """
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_queries):
        topic = "math" if i % 2 == 0 else "history"
        words = ["sum", "integer", "divide", "algebra"] if topic == "math" else ["king", "war", "empire", "century"]
        prompt = " ".join(rng.choice(words, size=6)) + f" item{i % 7}"
        qid = (f"{topic}_train-{i}" if i % 3 else f"{topic}_test-{i}") if ids == "split" else f"q-{i}"
        right = {"cheap": topic == "math", "pricey": topic == "history", "meh": bool(rng.random() < 0.5)}
        for model, cost in (("cheap", 0.001), ("pricey", 0.01), ("meh", 0.002)):
            lines.append(
                {"id": qid, "prompt": prompt, "task": topic, "model": model, "score": float(right[model]), "cost": cost}
            )
    return lines


def write_lines(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    """Write lines (dicts as JSON, strings as they are) to a .jsonl or .jsonl.gz file."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def scorer_cli(argv: list[str]) -> int:
    """Run `moai scorer ...` / `moai bench ...` through the scorer commands' own parsers; return the exit code."""
    import moai.cli.scorer

    parser = argparse.ArgumentParser(prog="moai")
    sub = parser.add_subparsers(dest="command", required=True)
    moai.cli.scorer.add_parsers(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
