"""The routing cache: a query close enough to a recent one reuses its predicted scores.

What is cached is the scorer's prediction, the gate's only costly part; the hard constraints, the
circuit breaker, the budget and the ranking are applied afresh to every query (under a millisecond),
so a cached decision can never send a query where its own flags or the pool's health forbid. An exact
repeat skips the encoder too; a near repeat (cosine similarity of the embeddings at least `similarity`)
skips the predictor. Entries live in a ring of `size` slots, and expire after `ttl_s` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from moai.mix_instructions.schema import RoutingCache
from moai.scorer import Predictor
from moai.scorer.predictors.base import ScorePredictor

__all__ = ["ScoreCache"]


class ScoreCache:
    """Recent queries and their scores for a fixed list of candidates."""

    def __init__(self, spec: RoutingCache, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self._clock = clock
        self._texts: list[str | None] = [None] * spec.size
        self._scores: list[list[float]] = [[] for _ in range(spec.size)]
        self._born = np.full(spec.size, -np.inf)
        self._vectors: np.ndarray | None = None  # [size, dim], allocated with the first embedding
        self._slot_of: dict[str, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    def scores(self, scorer: Predictor, query: str, candidates: Sequence[str]) -> tuple[list[float], bool]:
        """Return the candidates' scores for `query` and whether they came from the cache."""
        now = self._clock()
        fresh = self._born > now - self.spec.ttl_s
        with self._lock:
            slot = self._slot_of.get(query)
            if slot is not None and fresh[slot]:
                return list(self._scores[slot]), True
        if not isinstance(scorer, ScorePredictor):
            row = scorer.predict([query], list(candidates))[0]
            self._store(query, None, row, now)
            return row, False
        embedding = scorer.encoder.encode([query])[0]
        with self._lock:
            if self._vectors is not None and fresh.any():
                similarity = np.where(fresh, self._vectors @ embedding, -np.inf)
                best = int(np.argmax(similarity))
                if similarity[best] >= self.spec.similarity:
                    return list(self._scores[best]), True
        predicted = scorer.predict_embeddings(embedding[None, :])[0]
        row = [float(predicted[scorer.column(name)]) for name in candidates]
        self._store(query, embedding, row, now)
        return row, False

    def _store(self, query: str, embedding: np.ndarray | None, row: list[float], now: float) -> None:
        with self._lock:
            slot = self._next
            self._next = (slot + 1) % self.spec.size
            if (old := self._texts[slot]) is not None:
                self._slot_of.pop(old, None)
            self._texts[slot], self._scores[slot], self._born[slot] = query, row, now
            self._slot_of[query] = slot
            if embedding is not None:
                if self._vectors is None:
                    self._vectors = np.zeros((self.spec.size, embedding.shape[0]), dtype=np.float32)
                self._vectors[slot] = embedding
            elif self._vectors is not None:
                self._vectors[slot] = 0.0  # no embedding: only an exact repeat can hit this slot
