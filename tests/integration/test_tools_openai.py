"""Tools through a mix whose models are `provider: openai`, against a real OpenAI-compatible server on 127.0.0.1.

The server (`_scripted_openai.py`) answers with tool calls or text as scripted; LangChain's `ChatOpenAI`
(what `provider: openai` builds) talks to it over HTTP. A LangGraph agent (`create_agent`) on
`MixtureChatModel` calls a real calculator and finishes, for route, cascade and a synthesize mix; the
server's request log shows who was offered the tools and who got the tool's result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _scripted_openai import ScriptedServer, scripted_server  # tests/integration is not a package
from calculator import calculator
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel

from moai import MixtureChatModel
from moai.mix_instructions.load import parse_spec

pytestmark = pytest.mark.integration

QUESTION = "What is 6 times 7?"
CALL = {"tool_calls": [{"name": "calculator", "arguments": '{"expression": "6 * 7"}'}]}
FINAL = {"content": "6 times 7 is {tool}."}


class Product(BaseModel):
    """The product of two numbers."""

    answer: int


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    scripts = {
        "router-model": [CALL, FINAL],
        "cascade-model": [CALL, FINAL],
        "proposer": [{"content": "It is probably 42."}],
        "aggregator": [CALL, FINAL],
        "json-model": [{"content": '{"answer": 42}'}],
    }
    with scripted_server(scripts) as scripted:
        yield scripted


def served(url: str, model: str, **more: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": url, "privacy": "private_cloud", "quality": 0.6, **more}


def mix(kind: str, url: str) -> MixtureChatModel:
    if kind == "route":
        data: dict[str, Any] = {
            "name": "route_openai",
            "models": {"router": served(url, "router-model")},
            "gate": {"top_k": 1, "scorer": "priors"},
            "steps": [{"kind": "propose", "name": "answer"}],
            "aggregate": {"mode": "best"},
        }
    elif kind == "cascade":
        data = {
            "name": "cascade_openai",
            "models": {"cheap": served(url, "cascade-model")},
            "gate": {"top_k": 1, "scorer": "priors", "order": "cost"},
            "steps": [
                {"kind": "propose", "name": "try"},
                {
                    "kind": "judge",
                    "name": "check",
                    "self": True,
                    "cross": None,
                    "stop_when": {"score_at_least": 0.7, "max_rounds": 2},
                    "otherwise": "try",
                    "then_select": "next",
                },
            ],
            "aggregate": {"mode": "best"},
        }
    else:
        data = {
            "name": "moa_openai",
            "models": {"p1": served(url, "proposer"), "p2": served(url, "proposer"), "agg": served(url, "aggregator")},
            "gate": {"top_k": 2, "scorer": "priors", "candidates": ["p1", "p2"]},
            "steps": [{"kind": "propose", "name": "draft"}],
            "aggregate": {"mode": "synthesize", "model": "agg"},
        }
    return MixtureChatModel(mix=parse_spec(data), usage_db="off")


@pytest.mark.parametrize(
    ("kind", "upstream", "caller"),
    [("route", "router-model", "router"), ("cascade", "cascade-model", "cheap"), ("synthesize", "aggregator", "agg")],
)
def test_an_agent_on_a_mix_of_openai_models_calls_the_tool_and_finishes(
    server: ScriptedServer, kind: str, upstream: str, caller: str
) -> None:
    before = len(server.sent_to(upstream))
    proposals_before = len(server.sent_to("proposer"))
    agent: Any = create_agent(mix(kind, server.url), tools=[calculator])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    _, call, tool_result, final = result["messages"]
    assert isinstance(call, AIMessage) and call.tool_calls[0]["name"] == "calculator"
    assert call.tool_calls[0]["args"] == {"expression": "6 * 7"}
    assert call.response_metadata["answered_by"] == caller
    assert isinstance(tool_result, ToolMessage) and tool_result.text == "42"
    assert final.text == "6 times 7 is 42." and final.response_metadata["answered_by"] == caller
    first, second = server.sent_to(upstream)[before:]
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    # The second request continues the first: the call, then the tool's result with the call's own id.
    assistant, result_message = second["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_0" and result_message == {
        "role": "tool",
        "content": "42",
        "tool_call_id": "call_0",
    }
    proposals = server.sent_to("proposer")[proposals_before:]
    assert all("tools" not in body for body in proposals)  # proposers answer in text
    assert len(proposals) == (2 if kind == "synthesize" else 0)


def test_structured_output_reaches_the_server_as_its_response_format(server: ScriptedServer) -> None:
    data = {
        "name": "json_openai",
        "models": {"j": served(server.url, "json-model")},
        "gate": {"top_k": 1, "scorer": "priors"},
        "steps": [{"kind": "propose", "name": "answer"}],
    }
    model = MixtureChatModel(mix=parse_spec(data), usage_db="off")
    assert model.with_structured_output(Product, strict=True).invoke(QUESTION) == Product(answer=42)
    sent = server.sent_to("json-model")[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Product"
    assert json.loads(model.bind(response_format={"type": "json_object"}).invoke(QUESTION).text) == {"answer": 42}
