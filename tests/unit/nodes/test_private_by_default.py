"""Private by default: personal data found in a query keeps it away from third parties at every node."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import Field

from moai.api import mix_runtime
from moai.graphs.compile import build_graph
from moai.mix_instructions.load import parse_spec
from moai.providers.fake import ScriptedChatModel

SSN_QUERY = "My SSN is 123-45-6789. Which tax form do I need?"


class Witness(ScriptedChatModel):
    """A scripted model that keeps every text it was sent."""

    seen: list[str] = Field(default_factory=list)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        self.seen.extend(m.text for m in messages)
        return super()._reply(messages)


def mix(**sensitive: Any) -> Any:
    """A pool with a third-party model everywhere a model can be named: proposer, fallback, judge, aggregator.

    No patterns are declared: only the built-in detectors can make a query sensitive.
    """
    return parse_spec(
        {
            "name": "t",
            "models": {
                "cloud": {"provider": "fake", "model": "c", "privacy": "third_party", "quality": 0.95},
                "home": {"provider": "fake", "model": "h", "privacy": "local", "quality": 0.6, "fallbacks": ["cloud"]},
                "lab": {"provider": "fake", "model": "l", "privacy": "private_cloud", "quality": 0.5},
            },
            "gate": {
                "top_k": 2,
                "constraints": {"sensitive": {"allow_privacy": ["local", "private_cloud"], **sensitive}},
            },
            "steps": [
                {"kind": "propose", "name": "p", "models": ["cloud", "home", "lab"]},
                {"kind": "judge", "name": "j", "cross": "cloud", "stop_when": {"score_at_least": 0.99}},
                {"kind": "propose", "name": "again", "prompt": "improve", "next": "aggregate"},
            ],
            "aggregate": {"mode": "synthesize", "model": "cloud"},
        }
    )


async def run(spec: Any, query: str, **extra: Any) -> tuple[dict[str, Any], Witness]:
    runtime = mix_runtime(spec, usage_db="off")
    cloud = Witness(replies=["Answer 1: 9\nAnswer 2: 9\nAnswer 3: 9\nCritique: fine"])
    runtime.use_model("cloud", cloud)
    runtime.use_model("home", ScriptedChatModel(replies=["!fail down", "Form 1040\nConfidence: 0.5"]))
    runtime.use_model("lab", ScriptedChatModel(replies=["Form 1040-SR\nConfidence: 0.5"]))
    result = await build_graph(runtime).compile().ainvoke({"query": query, **extra})
    return result, cloud


async def test_an_ssn_in_the_query_never_reaches_the_third_party_model_though_no_pattern_is_declared() -> None:
    result, cloud = await run(mix(), SSN_QUERY)
    assert cloud.seen == []
    to_cloud = [c for c in result["calls"] if c["model"] == "cloud"]
    # Refused as a proposer, as home's fallback, as the judge and as the aggregator.
    assert {c["node"] for c in to_cloud} == {"p", "j", "aggregate"} and len(to_cloud) >= 4
    assert all(c["status"] == "skipped" and "privacy 'third_party'" in (c["error"] or "") for c in to_cloud)
    assert result["answer"] in {"Form 1040", "Form 1040-SR"}


async def test_the_same_mix_sends_an_ordinary_query_to_the_third_party_model() -> None:
    _, cloud = await run(mix(), "Which tax form do I need?")
    assert any("Which tax form do I need?" in text for text in cloud.seen)


async def test_personal_data_in_the_conversation_so_far_makes_the_next_turn_sensitive() -> None:
    history = [HumanMessage("Mail me at jane@example.com"), AIMessage("Noted.")]
    result, cloud = await run(mix(), "Which tax form do I need?", history=history)
    assert cloud.seen == [] and all(c["status"] == "skipped" for c in result["calls"] if c["model"] == "cloud")


async def test_a_mix_that_lists_no_detectors_has_turned_them_off() -> None:
    result, cloud = await run(mix(detectors=[]), SSN_QUERY)
    assert any(SSN_QUERY in text for text in cloud.seen)
    assert any(c["model"] == "cloud" and c["status"] == "ok" for c in result["calls"])
