"""Every run is bounded by what its mix declares, and a run that ends in an error is recorded as one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from moai import load_mix
from moai.api import mix_runtime, recursion_limit
from moai.errors import MixError
from moai.graphs.compile import MAX_SUPERSTEPS, build_graph, superstep_bound
from moai.mix_instructions import load_spec
from moai.providers.fake import ScriptedChatModel
from moai.usage import UsageStore, monitor_for


def looping_mix(max_rounds: int) -> dict[str, Any]:
    """A propose -> judge loop whose judge always grades low, so only max_rounds ends it."""
    return {
        "name": "loop",
        "models": {
            "a": {"provider": "fake", "model": "a", "replies": ["an answer"]},
            "j": {"provider": "fake", "model": "j", "replies": ["Answer 1: 1\nCritique: wrong"]},
        },
        "gate": {"candidates": ["a"], "top_k": 1},
        "steps": [
            {"kind": "propose", "name": "answer"},
            {
                "kind": "judge",
                "name": "grade",
                "self_assess": False,
                "cross": "j",
                "stop_when": {"score_at_least": 0.99, "max_rounds": max_rounds},
                "otherwise": "answer",
            },
        ],
        "aggregate": {"mode": "last"},
    }


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "usage.db")
    monkeypatch.setenv("MOAI_USAGE_DB", path)
    return path


def runs_in(db: str) -> list[dict[str, Any]]:
    monitor_for(db).flush()
    store = UsageStore(db)
    try:
        return store.runs()
    finally:
        store.close()


@pytest.mark.parametrize("rounds", [1, 3, 7])
def test_a_judged_loop_runs_to_its_max_rounds_within_the_derived_recursion_limit(tmp_path: Path, rounds: int) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(looping_mix(rounds)))
    graph = load_mix(path)
    spec = load_spec(path)
    assert graph.config is not None and graph.config["recursion_limit"] == superstep_bound(spec)
    assert recursion_limit(spec) == 2 + 2 * 2 * (1 + rounds)
    result = graph.invoke({"query": "q"})
    loops = ["answer[a]", "grade:again"] * (rounds - 1)
    assert result["trace"] == ["gate", *loops, "answer[a]", "grade:stop", "aggregate:last"]


def test_a_mix_whose_loops_could_outrun_the_hard_maximum_is_refused_even_when_built_in_code() -> None:
    spec = load_spec("refine")
    judge = next(s for s in spec.steps if s.kind == "judge")
    # model_copy skips validation: the compiler still refuses, so no value can switch the bound off.
    huge = judge.model_copy(update={"stop_when": judge.stop_when.model_copy(update={"max_rounds": 10**9})})
    spec = spec.model_copy(update={"steps": [huge if s is judge else s for s in spec.steps]})
    assert superstep_bound(spec) > MAX_SUPERSTEPS
    with pytest.raises(MixError, match=r"steps: a run could take [\d,]+ steps of the graph, more than the 5,000"):
        build_graph(mix_runtime(spec))


class Waiting(ScriptedChatModel):
    """A model that says when a call has begun, then takes its time."""

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        STARTED.set()
        return await super()._agenerate(*args, **kwargs)


STARTED = asyncio.Event()


async def test_a_cancelled_run_is_recorded_as_an_error_never_left_running(db: str) -> None:
    spec = load_spec("route")
    mix = mix_runtime(spec)
    for name in spec.models:
        mix.use_model(name, Waiting(replies=["late"], delay_s=30))
    STARTED.clear()
    task = asyncio.create_task(build_graph(mix).compile().ainvoke({"query": "q"}))
    await STARTED.wait()  # a client that disconnects mid-answer cancels the run
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = runs_in(db)
    assert run["status"] == "error" and run["error"].startswith("CancelledError")
