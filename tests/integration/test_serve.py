"""`moai serve` as a real process on a free loopback port, used by the `openai` client and `ChatOpenAI`.

The server serves a folder holding a scripted mix (provider `fake`), so the test needs no model files;
it starts in its own process group and is stopped by its PID at teardown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from _serve import moai_serve
from langchain_openai import ChatOpenAI
from openai import OpenAI

from moai.usage import UsageStore, monitor_for

pytestmark = pytest.mark.integration

PANEL = """
name: panel
description: Two scripted proposers and a synthesising aggregator.
models:
  a: {provider: fake, model: a, quality: 0.6, price: {input_per_mtok: 1.0, output_per_mtok: 2.0},
      replies: ["draft from a", "merged answer in several words"]}
  b: {provider: fake, model: b, quality: 0.5, replies: ["draft from b"]}
gate: {top_k: 2, scorer: priors}
steps:
  - {kind: propose, name: draft}
aggregate: {mode: synthesize, model: a}
"""
ANSWER = "merged answer in several words"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Start `moai serve`; yield its base URL and usage database; stop it by its PID."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "mixes").mkdir()
    (folder / "mixes" / "panel.yaml").write_text(PANEL)
    db = str(folder / "usage.db")
    with moai_serve(folder, folder / "mixes", db) as base:
        yield base, db


def calls_of(db: str, run_id: str) -> list[dict[str, object]]:
    monitor_for(db).flush()
    store = UsageStore(db)
    try:
        return [row for row in store.calls() if row["run_id"] == run_id]
    finally:
        store.close()


def test_the_openai_client_gets_answers_usage_and_headers(server: tuple[str, str]) -> None:
    base, db = server
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    assert "panel" in {model.id for model in client.models.list()}
    raw = client.chat.completions.with_raw_response.create(model="panel", messages=QUESTION, user="u-1")  # type: ignore[arg-type]
    completion = raw.parse()
    assert completion.choices[0].message.content == ANSWER
    run_id = raw.headers["x-moai-run-id"]
    assert sorted(raw.headers["x-moai-models"].split(",")) == ["a", "b"]
    assert float(raw.headers["x-moai-cost-usd"]) > 0 and raw.headers["x-moai-path"].startswith("gate -> ")
    calls = calls_of(db, run_id)
    assert len(calls) == 3 and completion.usage is not None
    assert completion.usage.total_tokens == sum(int(c["tokens_in"]) + int(c["tokens_out"]) for c in calls)  # type: ignore[call-overload]


def test_the_openai_client_streams_with_usage(server: tuple[str, str]) -> None:
    base, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="panel",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_the_openai_client_sees_errors_in_openais_shape(server: tuple[str, str]) -> None:
    base, _ = server
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError, match="panel"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)  # type: ignore[arg-type]
    # Tools are served now (test_serve_tools.py): a malformed one is the 400.
    with pytest.raises(openai.BadRequestError, match=r"tools\.0\.function\.name"):
        client.chat.completions.create(
            model="panel",
            messages=QUESTION,  # type: ignore[arg-type]
            tools=[{"type": "function", "function": {"name": "add two", "parameters": {"type": "object"}}}],
        )


def test_langchains_chat_openai_works_against_the_server(server: tuple[str, str]) -> None:
    base, _ = server
    model = ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="panel")  # type: ignore[arg-type]
    reply = model.invoke("What is the capital of France?")
    assert reply.text == ANSWER and reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0
    streamed = list(ChatOpenAI(base_url=f"{base}/v1", api_key="unused", model="panel", stream_usage=True).stream("Hi"))  # type: ignore[arg-type]
    assert "".join(chunk.text for chunk in streamed) == ANSWER
    assert any(chunk.usage_metadata for chunk in streamed)


def test_feedback_and_metrics(server: tuple[str, str]) -> None:
    base, _ = server
    reply = httpx.post(f"{base}/v1/chat/completions", json={"model": "panel", "messages": QUESTION}, timeout=30)
    run_id = reply.headers["x-moai-run-id"]
    assert httpx.post(f"{base}/v1/feedback", json={"run_id": run_id, "score": 1}, timeout=30).status_code == 200
    metrics = httpx.get(f"{base}/metrics", timeout=30).text
    assert 'moai_requests_total{mix="panel",status="200"}' in metrics
    assert json.loads(httpx.get(f"{base}/health", timeout=30).text)["status"] == "ok"
