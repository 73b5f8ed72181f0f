"""What every node of one compiled mix shares: the spec, its scorer, and its chat models, built once."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from moai.errors import MixRunError
from moai.mix_instructions.schema import MixSpec, ModelSpec
from moai.nodes._breaker import CircuitBreaker
from moai.nodes._cache import ScoreCache
from moai.nodes.learn import Encoder, LearnLog, OnlineGate
from moai.nodes.state import Call, RunInfo
from moai.scorer import Predictor
from moai.scorer.data.responses import check_replay
from moai.scorer.locate import check_scorer, described_models, load_scorer
from moai.scorer.verifier import Verifier, check_verifiers

__all__ = ["MixRuntime", "ModelFactory", "Recorder", "nothing_answered", "transient_errors"]

ModelFactory = Callable[[str, ModelSpec], BaseChatModel]
"""Builds the chat model of a pool member from its name and declaration (the surface's provider registry)."""


class Recorder(Protocol):
    """Takes usage rows (the surface's usage monitor); it must never block nor raise."""

    def record(self, kind: str, row: Mapping[str, object]) -> None:
        """Queue one row of kind 'run' (a run starts), 'call' or 'finish'."""
        ...


@cache
def transient_errors() -> tuple[type[BaseException], ...]:
    """Return the errors worth a retry: timeouts, lost connections, rate limits, server errors."""
    import openai

    return (
        TimeoutError,
        ConnectionError,
        openai.APIConnectionError,
        openai.RateLimitError,
        openai.InternalServerError,
    )


@dataclass
class MixRuntime:
    """The registry of one mix: its chat models are keyed by the names the mix gives them.

    What the nodes need from the surface is handed in: the factory that builds chat models, and the
    recorder that takes usage rows.
    """

    spec: MixSpec
    make_model: ModelFactory
    """Builds each pool member's chat model on first use."""
    source: str = "<mix>"
    recorder: Recorder | None = None
    """Where usage rows go; None records nothing."""
    learn_log: LearnLog | None = None
    """Where a learning gate reads the outcomes of every process (`gate.learn`); None: only its prior."""
    learn_encoder: Encoder | None = None
    """The learning gate's query encoder; None: the one `gate.learn.encoder` names (tests pass a fake)."""
    learn_seed: int | None = None
    """Seeds the learning gate's exploration draws; None: fresh entropy."""
    scorer: Predictor = field(init=False)
    verifiers: dict[str, Verifier] = field(init=False)
    """The verifier of each judge step that reads with one (`read: [verifier]`), by step name; read once."""
    online: OnlineGate | None = field(init=False)
    """The learning gate, when the mix declares `gate.learn`."""
    breaker: CircuitBreaker = field(init=False)
    cache: ScoreCache | None = field(init=False)
    _models: dict[str, BaseChatModel] = field(default_factory=dict, init=False, repr=False)
    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, BaseChatModel]] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        check_scorer(self.spec, self.source)
        check_replay(self.spec, self.source)
        self.verifiers = check_verifiers(self.spec, self.source)
        quality = {name: model.quality for name, model in self.spec.models.items()}
        gate = self.spec.gate
        self.scorer = load_scorer(gate.scorer, quality, self.source, described_models(self.spec), gate.describe_weight)
        self.breaker = CircuitBreaker(self.spec.circuit.failures, self.spec.circuit.cooldown_s)
        self.cache = ScoreCache(self.spec.gate.cache) if self.spec.gate.cache else None
        learn = self.spec.gate.learn
        self.online = (
            OnlineGate(
                self.spec.name, list(self.spec.models), learn, self.learn_log, self.learn_encoder, self.learn_seed
            )
            if learn is not None
            else None
        )

    def scores(self, query: str, candidates: list[str]) -> tuple[list[float], bool]:
        """Return the scorer's scores of the candidates for a query, and whether the routing cache gave them."""
        if self.cache is None:
            return self.scorer.predict([query], candidates)[0], False
        return self.cache.scores(self.scorer, query, candidates)

    def record(self, kind: str, run: RunInfo, row: Mapping[str, object]) -> None:
        """Hand a usage row, tagged with its run, to the monitor (no wait, and never an error)."""
        if self.recorder is not None:
            tags: dict[str, object] = {"run_id": run["run_id"], "ts": time.time()}
            if kind in ("run", "call") and run.get("key_id"):
                tags["key_id"] = run.get("key_id")  # whose key pays: the server's limits sum these rows
            self.recorder.record(kind, tags | dict(row))

    def learned_from(self, run: RunInfo, query: str, selected: list[str]) -> None:
        """Record the learning gate's choice for a run, so that its outcomes can update the bandit later.

        Each selected model is recorded with the query's embedding and the scorer's score for it (a model
        the bandit did not rank, such as a low-confidence fallback, is not).
        """
        if self.online is None:
            return
        x = self.online.features(query)
        priors = self.online.priors(query)
        sources = list(self.online.learn.sources)
        for name in (n for n in selected if n in priors):
            row = {"mix": self.spec.name, "model": name, "prior": priors.get(name), "sources": sources}
            self.record("learn", run, row | {"x": x[:-1].tolist()})

    def reward(self, run: RunInfo, model: str, score: float, source: str) -> None:
        """Record an outcome (a judge's score of a model's answer) for the learning gate."""
        if self.online is not None and source in self.online.learn.sources:
            self.record("reward", run, {"model": model, "reward": score, "source": source})

    def fail(self, run: RunInfo, message: str) -> MixRunError:
        """Record that a run ended unanswered; return the error to raise."""
        self.record("finish", run, {"status": "error", "error": message})
        return MixRunError(message)

    def chat_model(self, name: str) -> BaseChatModel:
        """Return the chat model of a pool member, building it on first use.

        An `openai` or `langchain` model is built once per event loop: its async HTTP connections belong
        to the loop that opened them, and `invoke` or repeated `asyncio.run` calls each bring a new loop.
        """
        with self._lock:
            models = self._models
            if self.spec.models[name].provider in ("openai", "langchain") and name not in self._models:
                models = self._per_loop.setdefault(asyncio.get_running_loop(), {})
            if name not in models:
                models[name] = self.make_model(name, self.spec.models[name])
            return models[name]

    def use_model(self, name: str, model: BaseChatModel) -> None:
        """Answer as `name` with this chat model (tests and benchmarks inject scripted models so)."""
        with self._lock:
            self._models[name] = model

    async def ainvoke(self, name: str, messages: list[BaseMessage]) -> AIMessage:
        """Call a pool member with its timeout per attempt, retrying transient errors with backoff.

        A retry of the model call itself, not LangGraph's RetryPolicy: that re-runs a whole node, which
        would repeat the fallbacks and records around the call.
        """
        spec = self.spec.models[name]
        model = self.chat_model(name)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(spec.retries + 1),
            wait=wait_exponential(multiplier=spec.backoff_s) + wait_random(0, spec.backoff_s),
            retry=retry_if_exception_type(transient_errors()),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await asyncio.wait_for(model.ainvoke(messages), spec.timeout_s)
        raise AssertionError("unreachable: tenacity re-raises the last error")


def nothing_answered(mix_name: str, calls: list[Call]) -> str:
    """Describe a query that no route answered, listing every attempt."""
    tried = "; ".join(f"{c['model']} at {c['node']}: {c['status']} ({c['error']})" for c in calls) or "nothing"
    return f"mix '{mix_name}': no model answered; tried {tried}"
