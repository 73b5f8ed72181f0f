"""The gate's online learning: a mix's bandit, fed from the usage database, and the features of a query.

The math is `moai.scorer.online`; the updates come from the surface through a `LearnLog` (the usage
database), read again every `gate.learn.reload_s` seconds, so every process of a mix adds up the same
outcomes. Nothing is written here: the gate records its choices, and feedback and judges their outcomes,
as usage rows.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from moai.mix_instructions.schema import Learn
from moai.scorer.online import FloatArray, LinearBandit, features

__all__ = ["LearnLog", "OnlineGate"]

_PAGE = 10_000
_MAX_PAGES = 100
"""A reload reads at most this many pages of updates; the rest wait for the next one."""
_REMEMBERED = 256
"""Queries whose features are kept, so that the gate's record of a choice does not encode the query twice."""


class LearnLog(Protocol):
    """Reads the learning updates of a mix (the surface's usage database)."""

    def learn_updates(
        self, mix: str, after: int = 0, limit: int = _PAGE
    ) -> list[tuple[int, str, list[float], float, float]]:
        """Return up to `limit` updates (id, model, embedding, prior, reward) with an id above `after`."""
        ...


class Encoder(Protocol):
    """Turns texts into embeddings (see `moai.scorer.encoders`)."""

    def encode(self, texts: Sequence[str]) -> Any:
        """Return one embedding per text."""
        ...


class OnlineGate:
    """A mix's bandit: scores for the gate, and the updates of every process, reloaded on a schedule.

    Args:
        mix: The mix's name (its key in the usage database).
        models: The pool.
        learn: The mix's `gate.learn`.
        log: Where the updates are read; None learns nothing across runs (no usage database).
        encoder: The query encoder; None builds `learn.encoder` on first use.
        seed: Seeds the exploration draws (None: fresh entropy).
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        mix: str,
        models: Sequence[str],
        learn: Learn,
        log: LearnLog | None,
        encoder: Encoder | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mix = mix
        self.models = list(models)
        self.learn = learn
        self.log = log
        self._encoder = encoder
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._bandit: LinearBandit | None = None
        self._last_id = 0
        self._loaded_at: float | None = None
        self._features: OrderedDict[str, FloatArray] = OrderedDict()
        self._priors: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.explored = 0
        self.decisions = 0

    def features(self, query: str) -> FloatArray:
        """Return a query's features (its embedding, unit norm, and a bias feature)."""
        with self._lock:
            if query in self._features:
                self._features.move_to_end(query)
                return self._features[query]
        if self._encoder is None:
            from moai.scorer.encoders import encoder_from_name

            self._encoder = encoder_from_name(self.learn.encoder)
        x = features(np.asarray(self._encoder.encode([query]))[0], self.learn.scale)
        with self._lock:
            self._features[query] = x
            while len(self._features) > _REMEMBERED:
                self._features.popitem(last=False)
        return x

    def scores(
        self, query: str, priors: Mapping[str, float], may_explore: bool = True
    ) -> tuple[dict[str, float], bool]:
        """Return the scores to rank `priors`' models on, and whether this decision explores.

        `priors` holds only the models no hard constraint rules out: exploring can only choose among them.
        """
        x = self.features(query)
        with self._lock:
            self._priors[query] = dict(priors)
            self._priors.move_to_end(query)
            while len(self._priors) > _REMEMBERED:
                self._priors.popitem(last=False)
            bandit = self._reload(len(x))
            explore = may_explore and bool(self._rng.random() < self.learn.explore)
            self.decisions += 1
            self.explored += explore
            return bandit.scores(x, priors, explore, self._rng), explore

    def priors(self, query: str) -> dict[str, float]:
        """Return the scorer's scores the bandit last ranked for this query (empty when forgotten)."""
        with self._lock:
            return dict(self._priors.get(query, {}))

    def reload(self) -> None:
        """Read the updates other processes (and this one) stored since the last read, now."""
        with self._lock:
            self._loaded_at = None
            if self._bandit is not None:
                self._reload(self._bandit.dim)

    @property
    def counts(self) -> dict[str, int]:
        """Return how many outcomes each model's statistics hold."""
        return dict(self._bandit.counts) if self._bandit is not None else dict.fromkeys(self.models, 0)

    def _reload(self, dim: int) -> LinearBandit:
        if self._bandit is None or self._bandit.dim != dim:
            learn = self.learn
            self._bandit = LinearBandit(self.models, dim, learn.prior_strength, learn.method, learn.width)
            self._last_id, self._loaded_at = 0, None
        now = self._clock()
        if self.log is not None and (self._loaded_at is None or now - self._loaded_at >= self.learn.reload_s):
            self._loaded_at = now
            for _ in range(_MAX_PAGES):
                rows = self.log.learn_updates(self.mix, self._last_id, _PAGE)
                for id_, model, embedding, prior, reward in rows:
                    self._last_id = max(self._last_id, id_)
                    # Stored embeddings are raw: the features follow this mix's current scale.
                    self._bandit.add_values(model, features(embedding, self.learn.scale), prior, reward)
                if len(rows) < _PAGE:
                    break
        return self._bandit
