"""Tools and structured output through `moai serve` on 127.0.0.1, with the `openai` client and `ChatOpenAI`.

The server is a real process (stopped by its PID) serving scripted mixes (provider `fake`), and one mix
whose model is `provider: openai` against a scripted OpenAI-compatible server (`_scripted_openai.py`) in
this process: client -> moai serve -> mix -> upstream server, tool calls and results all the way.
Each agent loop uses a mix of its own, so the scripted replies come in a known order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _scripted_openai import ScriptedServer, scripted_server  # tests/integration is not a package
from _serve import moai_serve
from calculator import SPEC, calculate, calculator
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel

pytestmark = pytest.mark.integration

CALL = '!tool {"name": "calculator", "args": {"expression": "6 * 7"}, "id": "call_1"}'
PRODUCT_CALL = '!tool {"name": "Product", "args": {"answer": 42}, "id": "call_p"}'


def calc_mix(name: str) -> str:
    return f"""
name: {name}
description: Calls the calculator, then answers with its result.
models:
  mini: {{provider: fake, model: mini, quality: 0.6, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}},
          replies: ['{CALL}', "6 times 7 is {{query}}."]}}
gate: {{top_k: 1, scorer: priors}}
steps:
  - {{kind: propose, name: answer}}
aggregate: {{mode: best}}
"""


PANEL = f"""
name: panel_calc
description: Two proposers in text; the aggregator calls the calculator.
models:
  a: {{provider: fake, model: a, quality: 0.6, replies: ["draft from a", '{CALL}', "6 times 7 is {{query}}."]}}
  b: {{provider: fake, model: b, quality: 0.5, replies: ["draft from b"]}}
gate: {{top_k: 2, scorer: priors}}
steps:
  - {{kind: propose, name: draft}}
aggregate: {{mode: synthesize, model: a}}
"""
JSON = """
name: json
description: Answers in JSON.
models:
  j: {provider: fake, model: j, quality: 0.6, replies: ['{"answer": 42}']}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
"""
PRODUCT = f"""
name: product_tool
description: Answers by calling the Product tool.
models:
  p: {{provider: fake, model: p, quality: 0.6, replies: ['{PRODUCT_CALL}']}}
gate: {{top_k: 1, scorer: priors}}
steps:
  - {{kind: propose, name: answer}}
"""


def upstream_mix(url: str) -> str:
    return f"""
name: upstream
description: One model on an OpenAI-compatible server.
models:
  remote: {{provider: openai, model: remote-model, base_url: "{url}", privacy: private_cloud, quality: 0.6}}
gate: {{top_k: 1, scorer: priors}}
steps:
  - {{kind: propose, name: answer}}
"""


QUESTION = "What is 6 times 7?"


class Product(BaseModel):
    """The product of two numbers."""

    answer: int


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedServer]:
    calls = [{"name": "calculator", "arguments": '{"expression": "6 * 7"}'}]
    with scripted_server({"remote-model": [{"tool_calls": calls}, {"content": "6 times 7 is {tool}."}]}) as server:
        yield server


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedServer) -> Iterator[str]:
    """Start `moai serve` on the mixes; yield its base URL (`.../v1`); stop it by its PID."""
    folder = tmp_path_factory.mktemp("serve_tools")
    mixes = folder / "mixes"
    mixes.mkdir()
    files = {
        "calc_client.yaml": calc_mix("calc_client"),
        "calc_stream.yaml": calc_mix("calc_stream"),
        "calc_langchain.yaml": calc_mix("calc_langchain"),
        "panel_calc.yaml": PANEL,
        "json.yaml": JSON,
        "product_tool.yaml": PRODUCT,
        "upstream.yaml": upstream_mix(upstream.url),
    }
    for name, text in files.items():
        (mixes / name).write_text(text)
    with moai_serve(folder, mixes) as url:
        yield f"{url}/v1"


def client_loop(client: OpenAI, mix: str) -> tuple[Any, Any]:
    """Run an agent loop with the `openai` client: ask, run each tool called, send the results, answer."""
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.with_raw_response.create(model=mix, messages=messages, tools=[SPEC])  # type: ignore[arg-type]
    for _ in range(4):  # bounded: the scripted mixes answer in the second round
        completion = first.parse()
        choice = completion.choices[0]
        if choice.finish_reason != "tool_calls":
            return completion, first
        messages.append(choice.message)
        for call in choice.message.tool_calls or []:
            arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": calculate(**arguments)})
        first = client.chat.completions.with_raw_response.create(model=mix, messages=messages, tools=[SPEC])  # type: ignore[arg-type]
    raise AssertionError("the loop did not end")


@pytest.mark.parametrize(("mix", "caller"), [("calc_client", "mini"), ("panel_calc", "a"), ("upstream", "remote")])
def test_an_agent_loop_with_the_openai_client(base: str, upstream: ScriptedServer, mix: str, caller: str) -> None:
    client = OpenAI(base_url=base, api_key="unused")
    completion, raw = client_loop(client, mix)
    assert completion.choices[0].message.content == "6 times 7 is 42."
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-moai-models"] == caller
    assert raw.headers["x-moai-path"] == f"gate:resume -> aggregate:resume[{caller}]"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    if mix == "upstream":
        # The upstream server was offered the tools, then got its own call back with the tool's result.
        first, second = upstream.sent_to("remote-model")[-2:]
        assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
        assert second["messages"][-1] == {"role": "tool", "content": "42", "tool_call_id": "call_0"}


def test_streaming_with_tools(base: str) -> None:
    client = OpenAI(base_url=base, api_key="unused")
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    stream = client.chat.completions.create(
        model="calc_stream",
        messages=messages,
        tools=[SPEC],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    [call] = [tc for d in deltas for tc in d.tool_calls or []]
    assert call.function is not None and call.function.name == "calculator"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assistant = {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "calculator", "arguments": call.function.arguments},
            }
        ],
    }
    messages += [
        assistant,
        {"role": "tool", "tool_call_id": call.id, "content": calculate(**json.loads(call.function.arguments or "{}"))},
    ]
    final = list(client.chat.completions.create(model="calc_stream", messages=messages, tools=[SPEC], stream=True))  # type: ignore[list-item]
    assert "".join(c.choices[0].delta.content or "" for c in final if c.choices) == "6 times 7 is 42."


def test_response_format_json_object_and_json_schema(base: str) -> None:
    client = OpenAI(base_url=base, api_key="unused")
    messages: Any = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="json", messages=messages, response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content or "") == {"answer": 42}
    schema = {
        "name": "Product",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "integer"}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    }
    strict = client.chat.completions.create(
        model="json", messages=messages, response_format={"type": "json_schema", "json_schema": schema}
    )
    assert json.loads(strict.choices[0].message.content or "") == {"answer": 42}
    parsed = client.chat.completions.parse(model="json", messages=messages, response_format=Product)
    assert parsed.choices[0].message.parsed == Product(answer=42)


def test_chat_openai_agent_and_structured_output_against_the_server(base: str) -> None:
    model = ChatOpenAI(base_url=base, api_key="unused", model="calc_langchain")  # type: ignore[arg-type]
    agent: Any = create_agent(model, tools=[calculator])
    result = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    _, call, tool_result, final = result["messages"]
    assert call.tool_calls[0]["name"] == "calculator" and call.tool_calls[0]["args"] == {"expression": "6 * 7"}
    assert isinstance(tool_result, ToolMessage) and tool_result.text == "42"
    assert final.text == "6 times 7 is 42."
    assert final.response_metadata["model_name"] == "calc_langchain"
    structured = ChatOpenAI(base_url=base, api_key="unused", model="json").with_structured_output(Product)  # type: ignore[arg-type]
    assert structured.invoke(QUESTION) == Product(answer=42)
    by_tool = ChatOpenAI(base_url=base, api_key="unused", model="product_tool")  # type: ignore[arg-type]
    assert by_tool.with_structured_output(Product, method="function_calling").invoke(QUESTION) == Product(answer=42)
    bound = by_tool.bind_tools([Product], tool_choice="Product").invoke(QUESTION)
    assert bound.tool_calls[0]["args"] == {"answer": 42}


def test_the_server_log_has_no_traceback(base: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = list(Path(tmp_path_factory.getbasetemp()).glob("serve_tools*/server.log"))
    assert logs and all("Traceback" not in log.read_text() for log in logs)
