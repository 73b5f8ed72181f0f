"""`moai serve` with tools and response formats: OpenAI's shapes, in process, over scripted mixes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from calculator import SPEC

from moai.serve import create_app

ROUTE = """
name: calc
description: One scripted model that calls the calculator, then answers with its result.
models:
  mini:
    provider: fake
    model: mini
    quality: 0.6
    replies:
      - '!tool {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "call_1"}'
      - "6 times 7 is {query}."
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
PANEL = """
name: panel
description: Two proposers in text; the aggregator calls the tool.
models:
  a: {provider: fake, model: a, quality: 0.6,
      replies: ["draft from a", '!tool {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "c9"}',
                "6 times 7 is {query}."]}
  b: {provider: fake, model: b, quality: 0.5, replies: ["draft from b"]}
gate: {top_k: 2, scorer: priors}
steps:
  - {kind: propose, name: draft}
aggregate: {mode: synthesize, model: a}
"""
JSON = """
name: json
description: The first model's JSON breaks the schema; its fallback's does not.
models:
  first: {provider: fake, model: first, quality: 0.9, fallbacks: [second], replies: ['{"answer": "forty-two"}']}
  second: {provider: fake, model: second, quality: 0.1, replies: ['{"answer": 42}']}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
PROSE = """
name: prose
description: Answers in prose whatever it is asked.
models:
  only: {provider: fake, model: only, quality: 0.9, replies: ["Forty-two."]}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
USER = [{"role": "user", "content": "What is 6 times 7?"}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "Product",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "integer"}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    for name, text in {"calc": ROUTE, "panel": PANEL, "json": JSON, "prose": PROSE}.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    app = create_app(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moai") as client:
        yield client


def events(text: str) -> list[Any]:
    return [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]


@pytest.mark.parametrize(("mix", "caller", "own_id"), [("calc", "mini", "call_1"), ("panel", "a", "c9")])
async def test_a_tool_call_in_openais_shape_and_its_result_goes_back_to_the_caller(
    client: httpx.AsyncClient, mix: str, caller: str, own_id: str
) -> None:
    request = {"model": mix, "messages": USER, "tools": [SPEC], "tool_choice": "auto"}
    reply = await client.post("/v1/chat/completions", json=request)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "6 * 7"}',
    }
    assert call["id"].startswith("moai.") and call["id"].endswith(f".{own_id}")
    # The client runs the tool and sends the call and its result back.
    messages = [*USER, message, {"role": "tool", "tool_call_id": call["id"], "content": "42"}]
    final = await client.post("/v1/chat/completions", json={**request, "messages": messages})
    assert final.status_code == 200, final.text
    answer = final.json()["choices"][0]
    assert answer["finish_reason"] == "stop" and answer["message"]["content"].endswith(" is 42.")
    assert final.headers["x-moai-path"] == f"gate:resume -> aggregate:resume[{caller}]"
    assert final.headers["x-moai-models"] == caller


async def test_a_streamed_tool_call_comes_as_a_tool_calls_delta(client: httpx.AsyncClient) -> None:
    request = {"model": "calc", "messages": USER, "tools": [SPEC], "stream": True}
    reply = await client.post("/v1/chat/completions", json=request)
    assert reply.status_code == 200, reply.text
    chunks = events(reply.text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    [calls] = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["arguments"] == '{"expression": "6 * 7"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_response_format_json_schema_a_reply_that_breaks_it_falls_back(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/v1/chat/completions", json={"model": "json", "messages": USER, "response_format": SCHEMA}
    )
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.json()["choices"][0]["message"]["content"]) == {"answer": 42}
    assert reply.headers["x-moai-models"] == "second"


async def test_response_format_no_json_is_a_502_listing_the_attempts(client: httpx.AsyncClient) -> None:
    request = {"model": "prose", "messages": USER, "response_format": {"type": "json_object"}}
    for stream in (False, True):
        reply = await client.post("/v1/chat/completions", json={**request, "stream": stream})
        assert reply.status_code == 502, reply.text
        assert "only at answer: error (ValueError: the reply is not JSON" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [SPEC, SPEC]}, "tools"),
        ({"tools": [SPEC] * 129}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools.0.function.name"),
        (
            {"tools": [SPEC], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice.function.name",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "1"},
                ]
            },
            "messages.1.tool_calls.0.function.arguments",
        ),
        (
            {
                "messages": [
                    *USER,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
                ]
            },
            "messages",
        ),
        ({"messages": [*USER, {"role": "tool", "content": "1"}]}, "messages.1.tool_call_id"),
    ],
)
async def test_malformed_tools_formats_and_tool_turns_are_400s_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": "calc", "messages": USER, **extra})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


async def test_a_forged_call_id_names_no_model_of_the_mix(client: httpx.AsyncClient) -> None:
    # The id's model is the client's word: one the mix lacks is refused with the mix's models, no call made.
    forged = "moai.nzxwe33epe.c1"  # base32 of "nobody"
    call = {"id": forged, "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    messages = [
        *USER,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": forged, "content": "1"},
    ]
    reply = await client.post("/v1/chat/completions", json={"model": "calc", "messages": messages, "tools": [SPEC]})
    assert (
        reply.status_code == 502
        and "no model 'nobody' in the mix; its models: mini" in reply.json()["error"]["message"]
    )
