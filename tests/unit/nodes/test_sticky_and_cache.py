"""Conversation-aware routing (a thread keeps its model) and the routing cache, in real graphs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fakes import fake_bundled
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from routing_fakes import FakeEncoder

import moai.nodes.runtime
from moai import build_mix
from moai.mix_instructions import MixSpec
from moai.mix_instructions.schema import RoutingCache
from moai.nodes._cache import ScoreCache
from moai.providers.fake import ScriptedChatModel
from moai.scorer.predictors.knn import KnnPredictor
from moai.usage import UsageStore, monitor_for, resolve_db


def _topic_scorer() -> KnnPredictor:
    """smol is right on maths, gemma on poems: a learned scorer whose scores depend on the query."""
    encoder = FakeEncoder()
    texts = ["math sum", "math product", "math equation", "poem rhyme", "poem verse", "poem sonnet"]
    scores = np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 3)
    return KnnPredictor(k=3, encoder=encoder).fit(encoder.encode(texts), scores, ["smol", "gemma"])  # type: ignore[return-value]


@pytest.fixture
def scorer(monkeypatch: pytest.MonkeyPatch) -> KnnPredictor:
    predictor = _topic_scorer()
    monkeypatch.setattr(moai.nodes.runtime, "load_scorer", lambda *_: predictor)
    return predictor


def _route(**gate: Any) -> MixSpec:
    spec = fake_bundled("route", {"smol": ["smol: {query}"], "gemma": ["gemma: {query}"]})
    plain = {"sticky": None, "cache": None}  # the bundled route keeps threads and caches: start from neither
    return spec.model_copy(update={"gate": spec.gate.model_copy(update=plain | gate)})


def _turns(spec: MixSpec, *queries: str) -> list[dict[str, Any]]:
    graph = build_mix(spec).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    return [graph.invoke({"query": q}, config) for q in queries]


def test_without_stickiness_each_turn_goes_to_its_best_model(scorer: KnnPredictor) -> None:
    first, second = _turns(_route(), "math sum please", "poem verse please")
    assert (first["models_used"], second["models_used"]) == (["smol"], ["gemma"])


def test_a_thread_keeps_its_model_while_the_score_stays_above_the_threshold(scorer: KnnPredictor) -> None:
    turns = _turns(_route(sticky=0.05), "math sum please", "poem verse please", "math again")
    assert [t["models_used"] for t in turns] == [["smol"], ["smol"], ["smol"]]


def test_a_thread_moves_on_when_the_kept_model_scores_below_the_threshold(scorer: KnnPredictor) -> None:
    turns = _turns(_route(sticky=0.5), "math sum please", "poem verse please")
    assert [t["models_used"] for t in turns] == [["smol"], ["gemma"]]


def test_earlier_turns_go_to_whichever_model_answers(scorer: KnnPredictor, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[BaseMessage]] = []
    reply = ScriptedChatModel._reply
    monkeypatch.setattr(
        ScriptedChatModel, "_reply", lambda self, messages: seen.append(messages) or reply(self, messages)
    )
    turns = _turns(_route(), "math sum please", "poem verse please")
    assert turns[1]["models_used"] == ["gemma"]
    texts = [m.text for m in seen[-1]]
    assert texts[1:] == ["math sum please", "smol: math sum please", "poem verse please"]
    assert len(turns[1]["calls"]) == 1  # the thread's records start afresh each turn


def test_the_cache_reuses_the_scores_of_a_repeat_and_records_the_hit(scorer: KnnPredictor) -> None:
    cache = RoutingCache(similarity=0.99, size=8, ttl_s=60)
    graph = build_mix(_route(cache=cache)).compile()
    calls = scorer.encoder.calls  # type: ignore[attr-defined]
    results = [graph.invoke({"query": q}) for q in ("math sum please", "math sum please", "Math  sum please")]
    assert scorer.encoder.calls - calls == 2  # type: ignore[attr-defined]  # an exact repeat skips the encoder

    db = resolve_db()
    assert db is not None
    monitor_for(db).flush()
    store = UsageStore(db)
    hits = {r["run_id"]: r["cache_hit"] for r in store.runs()}
    store.close()
    assert [hits[r["run"]["run_id"]] for r in results] == [0, 1, 1]


def test_a_cached_score_never_lifts_a_hard_constraint(scorer: KnnPredictor) -> None:
    spec = _route(cache=RoutingCache(size=8))
    spec = spec.model_copy(
        update={"models": spec.models | {"smol": spec.models["smol"].model_copy(update={"privacy": "third_party"})}}
    )
    graph = build_mix(spec).compile()
    assert graph.invoke({"query": "math sum"})["models_used"] == ["smol"]
    assert graph.invoke({"query": "math sum", "sensitive": True})["models_used"] == ["gemma"]


def test_the_cache_is_bounded_and_entries_expire() -> None:
    scorer, now = _topic_scorer(), [0.0]
    cache = ScoreCache(RoutingCache(similarity=0.999, size=2, ttl_s=10), clock=lambda: now[0])
    models = ["smol", "gemma"]
    assert cache.scores(scorer, "math sum", models)[1] is False
    assert cache.scores(scorer, "math sum", models)[1] is True
    assert cache.scores(scorer, "poem verse", models)[1] is False
    assert cache.scores(scorer, "math product", models)[1] is False  # evicts "math sum", the oldest
    assert cache.scores(scorer, "math sum", models)[1] is False
    now[0] = 11.0
    assert cache.scores(scorer, "math sum", models)[1] is False  # expired
    scores, hit = cache.scores(scorer, "math sum", models)
    assert hit and scores == pytest.approx(scorer.predict(["math sum"], models)[0])
