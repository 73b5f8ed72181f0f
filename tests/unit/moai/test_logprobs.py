"""Token log-probabilities carried from the provider's reply, through the proposal, to `read: [logprob]`.

The OpenAI provider is exercised end to end over HTTP, with httpx's in-process transport standing in for
the server (unit tests open no sockets): what moai asks for, and what it makes of what comes back, plain
and streamed. The scripted provider returns log-probabilities for the graph tests.
"""

from __future__ import annotations

import asyncio
import json
import math
from functools import partial
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.checkpoint.memory import InMemorySaver

from moai.api import mix_runtime
from moai.graphs.compile import build_graph
from moai.mix_instructions.load import parse_spec
from moai.providers import make_chat_model
from moai.providers.fake import ScriptedChatModel
from moai.scorer.logprob import logprob_score, logprob_stats

QUERY = "What is the capital of France?"
TOKENS = [("Paris", math.log(0.9), "Lyon", math.log(0.05)), (".", math.log(0.6), "!", math.log(0.3))]


def server_logprobs() -> dict[str, Any]:
    return {
        "content": [
            {
                "token": token,
                "logprob": lp,
                "bytes": None,
                "top_logprobs": [
                    {"token": token, "logprob": lp, "bytes": None},
                    {"token": other, "logprob": olp, "bytes": None},
                ],
            }
            for token, lp, other, olp in TOKENS
        ]
    }


EXPECTED = logprob_score(logprob_stats(server_logprobs()))


def completion(request: httpx.Request, seen: list[dict[str, Any]]) -> httpx.Response:
    body = json.loads(request.content)
    seen.append(body)
    logprobs = server_logprobs() if body.get("logprobs") else None
    if body.get("stream"):
        events = [
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": token},
                        "logprobs": None if logprobs is None else {"content": [entry]},
                        "finish_reason": None,
                    }
                ],
            }
            for token, entry in zip(["Paris", "."], (logprobs or {"content": [None, None]})["content"], strict=True)
        ]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris."},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    )


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The request bodies the 'server' received; every httpx.AsyncClient moai builds talks to it."""
    bodies: list[dict[str, Any]] = []
    transport = httpx.MockTransport(partial(completion, seen=bodies))

    class ToTheFakeServer(httpx.AsyncClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(transport=transport, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", ToTheFakeServer)
    return bodies


def mix(read: list[str], server: dict[str, Any] | None = None) -> dict[str, Any]:
    model = server or {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    return {
        "name": "lp",
        "models": {"server": model},
        "gate": {"candidates": ["server"], "top_k": 1},
        "steps": [
            {"kind": "propose", "name": "answer"},
            {"kind": "judge", "name": "grade", "self": False, "cross": None, "read": read, "prior_weight": 0},
        ],
        "aggregate": {"mode": "best"},
    }


def run(spec: dict[str, Any], stream: bool = False, **models: Any) -> dict[str, Any]:
    runtime = mix_runtime(parse_spec(spec), usage_db="off")
    for name, model in models.items():
        runtime.use_model(name, model)
    graph = build_graph(runtime).compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": f"t{stream}"}}

    async def go() -> dict[str, Any]:
        if not stream:
            await graph.ainvoke({"query": QUERY}, config)
        else:
            chunks = 0
            async for message, _ in graph.astream({"query": QUERY}, config, stream_mode="messages"):
                chunks += isinstance(message, AIMessageChunk)
            assert chunks > 1  # it did stream
        return dict((await graph.aget_state(config)).values)

    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_a_mix_that_reads_logprobs_asks_the_server_for_them_and_scores_them(
    seen: list[dict[str, Any]], stream: bool
) -> None:
    state = run(mix(["logprob"]), stream=stream)
    [body] = seen
    assert (body["logprobs"], body["top_logprobs"], bool(body.get("stream"))) == (True, 2, stream)
    [verdict] = state["verdicts"]
    assert verdict["read_scores"] == {"logprob": pytest.approx(EXPECTED)}
    assert verdict["score"] == pytest.approx(EXPECTED)


def test_a_mix_that_reads_no_logprobs_does_not_ask_for_them(seen: list[dict[str, Any]]) -> None:
    run(mix(["form"]))
    [body] = seen
    assert "logprobs" not in body and "top_logprobs" not in body


def test_the_provider_asks_only_when_told() -> None:
    spec = parse_spec(mix(["logprob"])).models["server"]
    asked, plain = make_chat_model("server", spec, logprobs=True), make_chat_model("server", spec)
    assert (asked.logprobs, asked.top_logprobs) == (True, 2)  # type: ignore[attr-defined]
    assert (plain.logprobs, plain.top_logprobs) == (None, None)  # type: ignore[attr-defined]


def test_scripted_logprobs_reach_the_proposal_and_the_judge() -> None:
    spec = mix(["logprob"], {"provider": "fake", "model": "s"})
    scripted = ScriptedChatModel(replies=["Paris is the capital."], logprobs=[math.log(0.8)])
    for stream in (False, True):
        state = run(spec, stream=stream, server=scripted)
        [proposal] = state["proposals"]
        assert proposal["logprob"] == {
            "tokens": 4,
            "mean_logprob": pytest.approx(math.log(0.8)),
            "mean_margin": pytest.approx(0.6),
        }
        # exp(mean) = 0.8, margin 0.8 - 0.2 = 0.6
        assert state["verdicts"][0]["read_scores"] == {"logprob": pytest.approx(0.7)}


def test_a_provider_that_gives_no_logprobs_leaves_the_judge_without_an_opinion() -> None:
    spec = mix(["logprob"], {"provider": "fake", "model": "s", "replies": ["Paris."]})
    state = run(spec)
    assert state["proposals"][0]["logprob"] is None
    assert state["verdicts"][0]["read_scores"] == {"logprob": None}
