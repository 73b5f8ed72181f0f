"""Tools and structured output through a mix: real LangGraph agent loops on scripted pools.

The agents call a real Python tool (a calculator that parses arithmetic, never `eval`s it) and finish; the
tests check which model was offered the tools, which made the call, and that the tool's result went back
to that model alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from calculator import SPEC, calculator
from fakes import fake_bundled
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel

from moai import MixRunError, MixtureChatModel
from moai.api import mix_runtime
from moai.graphs.compile import build_graph
from moai.mix_instructions import MixSpec
from moai.nodes.context import MixContext
from moai.providers.fake import ScriptedChatModel

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

QUESTION = "What is 6 times 7?"
CALL = '!tool {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "call_1"}'
FINAL = "6 times 7 is {query}."


def agent_run(mix: MixSpec, factory: str = "create_agent") -> tuple[list[BaseMessage], MixtureChatModel]:
    model = MixtureChatModel(mix=mix, usage_db="off")
    if factory == "create_agent":
        agent: Any = create_agent(model, tools=[calculator])
    else:
        agent = create_react_agent(model, tools=[calculator])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    return result["messages"], model


def check_loop(messages: list[BaseMessage], caller: str, first_trace: list[str]) -> None:
    _, call, result, final = messages
    assert isinstance(call, AIMessage) and isinstance(result, ToolMessage) and isinstance(final, AIMessage)
    assert call.tool_calls == [
        {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "call_1", "type": "tool_call"}
    ]
    assert call.response_metadata["answered_by"] == caller
    assert call.response_metadata["trace"] == first_trace
    assert result.text == "42" and result.tool_call_id == "call_1"
    assert final.text == "6 times 7 is 42." and not final.tool_calls
    assert final.response_metadata["trace"] == ["gate:resume", f"aggregate:resume[{caller}]"]
    assert [c["model"] for c in final.response_metadata["calls"]] == [caller]  # one call, no gate, no proposers


@pytest.mark.parametrize("factory", ["create_agent", "create_react_agent"])
def test_route_agent_loop_calls_the_calculator_and_finishes(factory: str) -> None:
    messages, _ = agent_run(fake_bundled("route", {"smol": [CALL, FINAL]}), factory)
    check_loop(messages, "smol", ["gate", "answer[smol]", "aggregate:best"])


def test_cascade_agent_loop_stops_the_judged_loop_on_the_call() -> None:
    messages, _ = agent_run(fake_bundled("cascade", {"smol": [CALL, FINAL]}))
    check_loop(messages, "smol", ["gate", "try[smol]", "check:stop(tool call)", "aggregate:best"])


def test_synthesize_agent_loop_the_aggregator_makes_the_call() -> None:
    mix = fake_bundled("moa", {"smol": ["s1", "s2", CALL, FINAL], "gemma": ["g1", "g2"]})
    messages, _ = agent_run(mix)
    path = ["gate", "layer1[smol]", "layer1[gemma]", "before_layer2", "layer2[smol]", "layer2[gemma]"]
    check_loop(messages, "smol", [*path, "aggregate:synthesize"])
    call = messages[1]
    assert [(c["node"], c["model"]) for c in call.response_metadata["calls"]][-1] == ("aggregate", "smol")


async def test_only_the_answering_call_is_offered_the_tools() -> None:
    # synthesize: proposers answer in text, the aggregator gets the tools (even on a single proposal).
    spec = fake_bundled("panel", {})
    runtime = mix_runtime(spec, usage_db="off")
    smol = ScriptedChatModel(replies=["legal view", CALL])
    gemma = ScriptedChatModel(replies=["ethics view"])
    runtime.use_model("smol", smol)
    runtime.use_model("gemma", gemma)
    graph = build_graph(runtime).compile()
    result = await graph.ainvoke({"query": QUESTION}, context=MixContext(tools=[SPEC], tool_choice="auto"))
    assert result["tool_calls"][0]["name"] == "calculator" and result["answered_by"] == "smol"
    offered = [bool(bound.get("tools")) for _, bound in smol.sent + gemma.sent]
    assert offered == [False, True, False]  # smol as proposer, smol as aggregator, gemma as proposer
    # route-like (one answer passed through): the proposer gets them.
    route = mix_runtime(fake_bundled("route", {}), usage_db="off")
    answerer = ScriptedChatModel(replies=["no call needed"])
    route.use_model("smol", answerer)
    out = await build_graph(route).compile().ainvoke({"query": QUESTION}, context=MixContext(tools=[SPEC]))
    assert out["answer"] == "no call needed" and out["tool_calls"] == []
    assert answerer.sent[0][1]["tools"] == [SPEC]


class NoTools(ScriptedChatModel):
    """A scripted model that, like the embedded llama.cpp ones, cannot take tools."""

    bind_tools = BaseChatModel.bind_tools  # LangChain's default: raises NotImplementedError


async def test_a_model_without_tools_answers_in_text_unless_a_call_is_required() -> None:
    spec = fake_bundled("route", {})
    runtime = mix_runtime(spec, usage_db="off")
    runtime.use_model("smol", NoTools(replies=["Probably 42."]))
    runtime.use_model("gemma", ScriptedChatModel(replies=[CALL]))
    graph = build_graph(runtime).compile()
    auto = await graph.ainvoke({"query": QUESTION}, context=MixContext(tools=[SPEC]))
    assert auto["answer"] == "Probably 42." and auto["tool_calls"] == []
    required = await graph.ainvoke({"query": QUESTION}, context=MixContext(tools=[SPEC], tool_choice="required"))
    smol, gemma = required["calls"]
    assert smol["status"] == "error" and "cannot take tools, and tool_choice requires a call" in smol["error"]
    assert gemma["fallback_for"] == "smol" and gemma["status"] == "ok"
    assert required["tool_calls"][0]["name"] == "calculator" and required["answered_by"] == "gemma"


async def test_a_tool_turn_goes_to_the_caller_and_only_to_a_fallback_that_takes_tools() -> None:
    spec = fake_bundled("route", {})
    runtime = mix_runtime(spec, usage_db="off")
    runtime.use_model("smol", ScriptedChatModel(replies=["!fail smol is down"]))
    runtime.use_model("gemma", NoTools(replies=["I cannot see tools"]))
    graph = build_graph(runtime).compile()
    turn = [
        AIMessage("", tool_calls=[{"name": "calculator", "args": {}, "id": "call_1"}]),
        ToolMessage("42", tool_call_id="call_1"),
    ]
    with pytest.raises(MixRunError, match="cannot take tools, and this turn carries tool results"):
        await graph.ainvoke({"query": QUESTION, "turn": turn}, context=MixContext(tools=[SPEC], resume="smol"))
    with pytest.raises(MixRunError, match="no model 'nobody' in the mix; its models: smol, gemma"):
        await graph.ainvoke({"query": QUESTION, "turn": turn}, context=MixContext(tools=[SPEC], resume="nobody"))


async def test_response_format_json_a_reply_that_is_not_json_is_a_failed_call() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "Product", "schema": schema, "strict": True}}
    spec = fake_bundled("route", {})
    runtime = mix_runtime(spec, usage_db="off")
    smol = ScriptedChatModel(replies=['{"answer": "forty-two"}', "Forty-two."])
    runtime.use_model("smol", smol)
    runtime.use_model("gemma", ScriptedChatModel(replies=['{"answer": 42}']))
    graph = build_graph(runtime).compile()
    out = await graph.ainvoke({"query": QUESTION}, context=MixContext(response_format=fmt))
    assert json.loads(out["answer"]) == {"answer": 42}
    bad, good = out["calls"]
    assert (
        bad["status"] == "error" and "does not match the schema 'Product': $.answer: expected integer" in bad["error"]
    )
    assert good["status"] == "ok" and smol.sent[0][1]["response_format"] == fmt
    runtime.use_model("gemma", ScriptedChatModel(replies=["Forty-two."]))
    with pytest.raises(MixRunError, match="the reply is not JSON"):
        await graph.ainvoke({"query": QUESTION}, context=MixContext(response_format={"type": "json_object"}))


class Product(BaseModel):
    """The product of two numbers."""

    answer: int


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
def test_with_structured_output(method: str) -> None:
    reply = (
        '!tool {"name": "Product", "args": {"answer": 42}, "id": "c1"}'
        if method == "function_calling"
        else '{"answer": 42}'
    )
    model = MixtureChatModel(mix=fake_bundled("route", {"smol": [reply]}), usage_db="off")
    assert model.with_structured_output(Product, method=method).invoke(QUESTION) == Product(answer=42)  # type: ignore[arg-type]
    raw = model.with_structured_output(Product.model_json_schema(), method=method, include_raw=True).invoke(QUESTION)
    assert raw["parsed"] == {"answer": 42} and raw["parsing_error"] is None  # type: ignore[index]
    assert raw["raw"].response_metadata["mix"] == "route"  # type: ignore[index]


def test_synthesize_structured_output_goes_to_the_aggregator() -> None:
    model = MixtureChatModel(
        mix=fake_bundled("moa", {"smol": ["s1", "s2", '{"answer": 42}'], "gemma": ["g1", "g2"]}), usage_db="off"
    )
    assert model.with_structured_output(Product).invoke(QUESTION) == Product(answer=42)


async def test_streaming_a_tool_call_gives_tool_call_chunks() -> None:
    model = MixtureChatModel(mix=fake_bundled("route", {"smol": [CALL]}), usage_db="off").bind_tools([calculator])
    chunks = [chunk async for chunk in model.astream(QUESTION)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.tool_calls == [
        {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "call_1", "type": "tool_call"}
    ]
    assert merged.response_metadata["answered_by"] == "smol"


@pytest.mark.parametrize(
    ("bind", "match"),
    [
        ({"tools": [SPEC] * 2}, "two tools have the same name"),
        ({"tools": [SPEC] * 129}, "at most 128"),
        ({"tools": [SPEC], "tool_choice": "adder"}, "'adder' is not a tool offered"),
        ({"tools": [], "tool_choice": "required"}, "'required' needs tools"),
    ],
)
def test_malformed_tools_are_refused_when_bound(bind: dict[str, Any], match: str) -> None:
    model = MixtureChatModel(mix=fake_bundled("route", {}), usage_db="off")
    with pytest.raises(ValueError, match=match):
        model.bind_tools(bind["tools"], tool_choice=bind.get("tool_choice"))
