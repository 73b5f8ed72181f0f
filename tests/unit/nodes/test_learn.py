"""Online learning in the gate: feedback moves traffic, exploration stays in its share and never breaks
a hard constraint, and what one runtime learns another reads from the same usage database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from routing_fakes import FakeEncoder

from moai.graphs.compile import build_graph
from moai.mix_instructions import MixSpec
from moai.mix_instructions.schema import RoutingCache
from moai.nodes.gate import decide
from moai.nodes.runtime import MixRuntime
from moai.providers import make_chat_model
from moai.usage import LearnReader, UsageStore, monitor_for, record_feedback


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A usage database of the test's own ($MOAI_USAGE_DB wins over any path, as for the mixes)."""
    path = tmp_path / "usage.db"
    monkeypatch.setenv("MOAI_USAGE_DB", str(path))
    return path


def _spec(learn: dict[str, Any] | None = None, **models: dict[str, Any]) -> MixSpec:
    """Two local models; `smol` has the higher prior, so without learning it takes every query."""
    pool = {
        "smol": {"provider": "fake", "model": "s", "privacy": "local", "quality": 0.6, "replies": ["smol: {query}"]},
        "gemma": {"provider": "fake", "model": "g", "privacy": "local", "quality": 0.5, "replies": ["gemma: {query}"]},
    }
    for name, extra in models.items():
        pool[name] = {"provider": "fake", "model": name, "privacy": "local", "quality": 0.5, "replies": ["x"]} | extra
    gate: dict[str, Any] = {"scorer": "priors", "top_k": 1}
    if learn is not None:
        gate["learn"] = learn
    return MixSpec.model_validate(
        {"name": "learning", "models": pool, "gate": gate, "steps": [{"kind": "propose", "name": "answer"}]}
    )


def _runtime(spec: MixSpec, db: Path | None = None, seed: int = 0) -> MixRuntime:
    recorder = monitor_for(str(db)) if db is not None else None
    log = LearnReader(str(db)) if db is not None else None
    return MixRuntime(
        spec, make_chat_model, recorder=recorder, learn_log=log, learn_encoder=FakeEncoder(), learn_seed=seed
    )


def _ask(mix: MixRuntime, query: str) -> dict[str, Any]:
    return build_graph(mix).compile().invoke({"query": query})


def test_without_learning_the_gate_is_unchanged() -> None:
    mix = _runtime(_spec())
    assert mix.online is None
    assert decide(mix, "hello", False)["selected"] == ["smol"]


def test_feedback_moves_traffic_to_the_model_it_favours(db: Path) -> None:
    """Users like gemma's answers and not smol's: after 40 runs, gemma takes most of the next 100.

    The bound: once the bandit has learned, only an exploring decision (10% of them, declared) can go to
    smol, so gemma's expected share is at least 90%; 80% is more than 3 standard deviations of a 100-run
    count below that.
    """
    mix = _runtime(_spec({"explore": 0.1, "reload_s": 1}), db)
    chosen = []
    for i in range(140):
        out = _ask(mix, f"question number {i} about topic {i % 7}")
        model = out["models_used"][0]
        chosen.append(model)
        record_feedback(out["run"]["run_id"], 1.0 if model == "gemma" else 0.0, db=db)
        mix.online.reload()  # type: ignore[union-attr]
    assert chosen[0] == "smol"  # it starts from the scorer's choice
    assert chosen[40:].count("gemma") / 100 >= 0.8


def test_judge_verdicts_update_the_gate_when_declared(db: Path) -> None:
    pool = _spec().model_dump()["models"]
    pool["j"] = {"provider": "fake", "model": "j", "privacy": "local", "replies": ["Answer 1: 9"]}
    spec = MixSpec.model_validate(
        {
            "name": "learning",
            "models": pool,
            "gate": {"scorer": "priors", "candidates": ["smol", "gemma"], "learn": {"sources": ["judge"]}},
            "steps": [
                {"kind": "propose", "name": "answer"},
                {"kind": "judge", "name": "judge", "cross": "j", "self_assess": False},
            ],
        }
    )
    mix = _runtime(spec, db)
    _ask(mix, "what is two plus two")
    monitor_for(str(db)).flush()
    mix.online.reload()  # type: ignore[union-attr]
    assert mix.online.counts == {"smol": 1, "gemma": 0, "j": 0}  # type: ignore[union-attr]
    store = UsageStore(str(db))
    try:
        assert [(model, reward) for _, model, _, _, reward in store.learn_updates("learning")] == [("smol", 0.9)]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("extra", "constraints", "sensitive"),
    [
        ({"privacy": "third_party"}, {}, True),
        ({"latency_s": 30}, {"max_latency_s": 5}, False),
        ({"energy_wh_per_ktok": 1000, "max_tokens": 4096}, {"max_co2e_g": 1}, False),
    ],
    ids=["privacy", "latency", "carbon"],
)
def test_exploration_never_picks_an_excluded_model(
    extra: dict[str, Any], constraints: dict[str, Any], sensitive: bool
) -> None:
    """The banned model has the best prior and a learned record of perfect answers; it is never chosen,
    neither on fresh queries nor on repeats that the routing cache answers."""
    spec = _spec({"explore": 0.5, "method": "linucb", "width": 10}, banned=extra | {"quality": 1.0})
    spec = spec.model_copy(
        update={
            "gate": spec.gate.model_copy(
                update={"constraints": spec.gate.constraints.model_copy(update=constraints), "cache": RoutingCache()}
            )
        }
    )
    mix = _runtime(spec, seed=1)
    bandit = mix.online
    assert bandit is not None
    x = bandit.features("warm up")
    bandit.scores("warm up", {"banned": 1.0})
    for _ in range(50):
        bandit._bandit.add_values("banned", x, 1.0, 1.0)  # type: ignore[union-attr]
    decisions = [decide(mix, f"query {i % 100}", sensitive) for i in range(300)]
    assert any(d["cache_hit"] for d in decisions)
    picks = {d["selected"][0] for d in decisions}
    assert "banned" not in picks
    assert picks <= {"smol", "gemma"}


def test_exploration_never_breaks_the_budget() -> None:
    """A model too dear for the budget is never called, however much the bandit explores towards it."""
    spec = _spec(
        {"explore": 0.5, "method": "linucb", "width": 10},
        dear={
            "quality": 1.0,
            "price": {"input_per_mtok": 1000, "output_per_mtok": 1000},
            "replies": ["dear"],
            "fallbacks": ["smol"],
        },
    )
    spec = spec.model_copy(
        update={
            "gate": spec.gate.model_copy(
                update={"objective": spec.gate.objective.model_copy(update={"budget_usd": 1e-6})}
            )
        }
    )
    mix = _runtime(spec, seed=2)
    answered = [_ask(mix, f"q {i}")["models_used"] for i in range(30)]
    assert all("dear" not in used for used in answered)


def test_exploration_holds_its_declared_share() -> None:
    """2,000 seeded decisions at explore 0.1: the share explored is 0.1 within 0.02 (3 standard deviations)."""
    mix = _runtime(_spec({"explore": 0.1}), seed=3)
    bandit = mix.online
    assert bandit is not None
    for i in range(2000):
        bandit.scores(f"q {i % 50}", {"smol": 0.6, "gemma": 0.5})
    assert bandit.decisions == 2000
    assert abs(bandit.explored / bandit.decisions - 0.1) <= 0.02


def test_sensitive_queries_are_neither_explored_nor_learned_from(db: Path) -> None:
    mix = _runtime(_spec({"explore": 0.5}), db)
    out = build_graph(mix).compile().invoke({"query": "what should I do", "sensitive": True})
    record_feedback(out["run"]["run_id"], 1.0, db=db)
    store = UsageStore(str(db))
    try:
        assert store.learn_updates("learning") == []
        assert store._select("SELECT * FROM learn_contexts") == []
    finally:
        store.close()
    assert mix.online.explored == 0  # type: ignore[union-attr]


def test_two_runtimes_share_what_they_learn_through_one_database(db: Path) -> None:
    """Feedback given to runs of two runtimes is summed in a third, started afresh: no update is lost.

    The second runtime starts after the first's three zeros for smol, reads them, and goes to gemma.
    """
    # No reload within the test, however slow the machine: each runtime reads the database once, at its
    # first decision, so the picks do not depend on timing.
    spec = _spec({"explore": 0.0, "reload_s": 3600})
    picks: list[str] = []
    for n in range(2):
        mix = _runtime(spec, db)
        for i in range(3):
            out = _ask(mix, f"runtime {n} question {i}")
            picks.append(out["models_used"][0])
            record_feedback(out["run"]["run_id"], 0.0, db=db)
    # The second runtime's first decision reads the first's three zeros for smol.
    assert picks == ["smol"] * 3 + ["gemma"] * 3
    fresh = _runtime(spec, db)
    fresh.online.scores("any question", {"smol": 0.6, "gemma": 0.5})  # type: ignore[union-attr]
    assert fresh.online.counts == {"smol": 3, "gemma": 3}  # type: ignore[union-attr]
