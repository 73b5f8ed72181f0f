"""Tools and structured output on the real embedded models: JSON forced by a grammar, tools answered in text."""

from __future__ import annotations

import json

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from moai import MixtureChatModel

pytestmark = pytest.mark.integration

LOCAL = {"smol", "gemma"}


class Product(BaseModel):
    """The product of two numbers."""

    answer: int


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    raise AssertionError("the embedded models cannot call tools")


def test_structured_output_from_the_bundled_route_mix() -> None:
    model = MixtureChatModel(mix="route", usage_db="off")
    raw = model.with_structured_output(Product, strict=True, include_raw=True).invoke("What is 6 times 7?")
    assert isinstance(raw["parsed"], Product)  # the grammar makes it JSON of the schema; its value is the model's
    assert raw["raw"].response_metadata["models_used"][0] in LOCAL  # type: ignore[index]


def test_json_from_the_bundled_moa_mix_its_aggregator() -> None:
    # A schema whose every value is bounded: the grammar then closes the JSON well within the aggregator's
    # max_tokens, whatever the model writes (an unbounded json_object can be cut short: a failed call).
    capital = {"type": "string", "maxLength": 40}
    schema = {
        "type": "object",
        "properties": {"capital": capital},
        "required": ["capital"],
        "additionalProperties": False,
    }
    reply = MixtureChatModel(mix="moa", usage_db="off").invoke(
        "Give the capital of France as a JSON object.",
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema, "strict": True}},
    )
    assert isinstance(json.loads(reply.text)["capital"], str)
    assert reply.response_metadata["trace"][-1] == "aggregate:synthesize"


def test_an_agent_with_tools_on_local_models_ends_with_a_text_answer() -> None:
    agent = create_agent(MixtureChatModel(mix="route", usage_db="off"), tools=[calculator])
    result = agent.invoke({"messages": [HumanMessage("What is the capital of France?")]})
    assert [m.type for m in result["messages"]] == ["human", "ai"]
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and final.text and not final.tool_calls
