"""`moai serve`: the OpenAI-compatible API over scripted mixes, through the ASGI app in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from moai.chat_model import MixtureChatModel
from moai.cli import main
from moai.errors import MixError
from moai.mix_instructions import bundled_mixes
from moai.providers.fake import ScriptedChatModel
from moai.serve import create_app
from moai.serve.app import app_from_env
from moai.serve.metrics import Metrics
from moai.usage import UsageStore, monitor_for

ECHO = """
name: echo
description: One scripted model, for tests.
models:
  mini: {provider: fake, model: mini, quality: 0.6, price: {input_per_mtok: 1.0, output_per_mtok: 2.0},
         replies: ["Paris is the capital. ({query})"]}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
PANEL = """
name: panel
description: Two scripted proposers and a synthesising aggregator.
models:
  a: {provider: fake, model: a, quality: 0.6, replies: ["draft from a", "merged answer in several words"]}
  b: {provider: fake, model: b, quality: 0.5, replies: ["draft from b"]}
gate: {top_k: 2, scorer: priors}
steps:
  - {kind: propose, name: draft}
aggregate: {mode: synthesize, model: a}
"""
BROKEN = """
name: broken
models:
  a: {provider: fake, model: a, quality: 0.6, replies: ["!fail rate limited"]}
gate: {top_k: 1, scorer: priors}
steps:
  - {kind: propose, name: answer}
aggregate: {mode: best}
"""
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def mixes(tmp_path: Path) -> Path:
    folder = tmp_path / "mixes"
    folder.mkdir()
    for name, text in {"echo": ECHO, "panel": PANEL, "broken": BROKEN}.items():
        (folder / f"{name}.yaml").write_text(text)
    (folder / "notes.txt").write_text("not a mix")
    return folder


@pytest.fixture
async def client(mixes: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(mixes, max_body_bytes=64 * 1024)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://moai") as client:
        yield client


def events(text: str) -> list[Any]:
    """Return the data of each server-sent event, `[DONE]` as a string."""
    found = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: ")
            data = block.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


def stored(run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return a run's row and its calls' rows from the usage store."""
    db = os.environ["MOAI_USAGE_DB"]
    assert monitor_for(db).flush()
    store = UsageStore(db)
    try:
        [run] = [row for row in store.runs() if row["run_id"] == run_id]
        return run, [row for row in store.calls() if row["run_id"] == run_id]
    finally:
        store.close()


async def test_models_lists_the_bundled_mixes_and_the_folders(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/models")
    assert reply.status_code == 200 and reply.json()["object"] == "list"
    models = {m["id"]: m for m in reply.json()["data"]}
    assert set(models) == {*bundled_mixes(), "echo", "panel", "broken"}
    assert models["echo"]["description"] == "One scripted model, for tests."
    assert models["route"]["description"] and models["echo"]["object"] == "model"
    assert (await client.get("/health")).json() == {"status": "ok", "mixes": len(models)}


async def test_a_completion_sums_every_call_and_names_the_run_in_headers(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": "panel", "messages": USER, "user": "u-7"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "panel"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "merged answer in several words"}
    assert body["choices"][0]["finish_reason"] == "stop"
    run_id = reply.headers["x-moai-run-id"]
    assert body["id"] == f"chatcmpl-{run_id}"
    run, calls = stored(run_id)
    assert run["status"] == "ok" and run["user_id"] == "u-7" and run["mix"] == "panel"
    assert len(calls) == 3  # two proposers and the aggregator
    tokens_in, tokens_out = sum(c["tokens_in"] for c in calls), sum(c["tokens_out"] for c in calls)
    assert body["usage"] == {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
    assert sorted(reply.headers["x-moai-models"].split(",")) == ["a", "b"]
    assert float(reply.headers["x-moai-cost-usd"]) == pytest.approx(sum(c["cost_usd"] for c in calls), abs=1e-8)
    path = reply.headers["x-moai-path"].split(" -> ")
    assert path[0] == "gate" and sorted(path[1:3]) == ["draft[a]", "draft[b]"] and path[3] == "aggregate:synthesize"


async def test_history_and_system_messages_reach_the_mix(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]},
    ]
    reply = await client.post("/v1/chat/completions", json={"model": "echo", "messages": messages})
    assert reply.status_code == 200, reply.text
    # The fake model echoes the last message it got: the query, system text first.
    assert reply.json()["choices"][0]["message"]["content"].endswith("(Answer briefly.\n\nCapital of France?)")
    assert reply.headers["x-moai-models"] == "mini"


async def test_a_stream_sends_the_answers_tokens_then_usage_then_done(client: httpx.AsyncClient) -> None:
    request = {"model": "panel", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    reply = await client.post("/v1/chat/completions", json=request)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    run_id = reply.headers["x-moai-run-id"]
    chunks = events(reply.text)
    assert chunks[-1] == "[DONE]"
    *content, finish, usage, _ = chunks
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == f"chatcmpl-{run_id}" for c in content)
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c["choices"][0]["delta"]["content"] for c in content[1:]]
    assert len(tokens) > 1 and "".join(tokens) == "merged answer in several words"
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["moai"]["run_id"] == run_id
    assert sorted(finish["moai"]["models"]) == ["a", "b"]
    _, calls = stored(run_id)
    tokens_in, tokens_out = sum(c["tokens_in"] for c in calls), sum(c["tokens_out"] for c in calls)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == tokens_in + tokens_out


async def test_a_stream_without_usage_and_a_mix_that_streams_no_tokens(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": "echo", "messages": USER, "stream": True})
    chunks = events(reply.text)
    assert "usage" not in chunks[-2] and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # `aggregate: best` passes a proposer's answer through: it comes whole, in one chunk.
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Paris is the capital. (What is the capital of France?)"


async def test_an_unknown_model_is_a_404_listing_the_mixes(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "gpt-4o" in error["message"] and "echo" in error["message"] and "route" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": []}, "messages"),
        ({"model": "echo", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": "echo", "messages": USER, "max_tokens": 10**12}, "max_tokens"),
        ({"model": "echo", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "echo", "messages": USER, "temperature": 1e308 * 10}, "temperature"),
        ({"model": "echo", "messages": USER, "temperature": 7}, "temperature"),
        ({"model": "echo", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "echo", "messages": USER * 600}, "messages"),
        ({"model": "echo", "messages": [{"role": "system", "content": "Be terse."}]}, "messages"),
        ({"model": "echo", "messages": [*USER, {"role": "assistant", "content": "Paris"}]}, "messages.1.role"),
        ({"model": "echo", "messages": [{"role": "user", "content": "  "}]}, "messages.0.content"),
        # Tools and response formats are served now (test_serve_app_tools.py); malformed ones are 400s naming the field.
        ({"model": "echo", "messages": USER, "tools": [{"type": "function"}]}, "tools.0"),
        ({"model": "echo", "messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "echo", "messages": USER, "response_format": {"type": "yaml"}}, "response_format.type"),
        ({"model": "echo", "messages": USER, "functions": [{"name": "f"}]}, "functions"),
        ({"model": "echo", "messages": USER, "n": 2}, "n"),
        (
            {"model": "echo", "messages": [*USER, {"role": "tool", "content": "4", "tool_call_id": "x"}]},
            "messages.1.tool_call_id",
        ),
    ],
)
async def test_a_malformed_request_is_a_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    # json.dumps writes an infinity as `Infinity`, which is not JSON: refused like any non-finite number.
    reply = await client.post(
        "/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param or (param == "temperature" and error["code"] == "invalid_json")


NOT_FINITE = '{"model": "echo", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1e999}'


@pytest.mark.parametrize("text", ["{", "[1, 2]", '"text"', "\xff", '{"model": NaN}', "[" * 50_000, NOT_FINITE])
async def test_a_body_that_is_not_a_json_object_is_a_400(client: httpx.AsyncClient, text: str) -> None:
    reply = await client.post("/v1/chat/completions", content=text.encode("utf-8", "surrogateescape"))
    assert reply.status_code == 400 and "error" in reply.json()


async def test_a_huge_body_is_refused_before_it_is_read(client: httpx.AsyncClient) -> None:
    huge = {"model": "echo", "messages": [{"role": "user", "content": "x" * 100_000}]}
    reply = await client.post("/v1/chat/completions", json=huge)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
        for _ in range(100):
            yield b"x" * 1024

    reply = await client.post("/v1/chat/completions", content=chunks())
    assert reply.status_code == 413


async def test_a_run_no_model_answers_is_a_502_with_the_attempts(client: httpx.AsyncClient) -> None:
    for stream in (False, True):
        reply = await client.post("/v1/chat/completions", json={"model": "broken", "messages": USER, "stream": stream})
        assert reply.status_code == 502
        error = reply.json()["error"]
        assert error["code"] == "no_model_answered" and "rate limited" in error["message"]


async def test_feedback_is_recorded_for_a_run(client: httpx.AsyncClient) -> None:
    reply = await client.post("/v1/chat/completions", json={"model": "echo", "messages": USER})
    run_id = reply.headers["x-moai-run-id"]
    ok = await client.post("/v1/feedback", json={"run_id": run_id, "score": 0.75})
    assert ok.status_code == 200 and ok.json()["score"] == 0.75
    store = UsageStore(os.environ["MOAI_USAGE_DB"])
    try:
        assert [f["score"] for f in store.feedback() if f["run_id"] == run_id] == [0.75]
    finally:
        store.close()
    missing = await client.post("/v1/feedback", json={"run_id": "no-such-run", "score": 1})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "run_id"
    wrong = await client.post("/v1/feedback", json={"run_id": run_id, "score": 2})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "score"


async def test_metrics_count_requests_errors_tokens_and_cost_per_mix_and_model(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json={"model": "echo", "messages": USER})
    await client.post("/v1/chat/completions", json={"model": "broken", "messages": USER})
    await client.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
    text = (await client.get("/metrics")).text
    assert 'moai_requests_total{mix="echo",status="200"} 1' in text
    assert 'moai_errors_total{mix="broken",code="no_model_answered"} 1' in text
    assert 'moai_errors_total{mix="-",code="model_not_found"} 1' in text
    assert 'moai_tokens_total{mix="echo",model="mini",direction="out"}' in text
    assert 'moai_cost_usd_total{mix="echo",model="mini"}' in text
    assert 'moai_request_duration_seconds_count{mix="echo"} 1' in text
    assert 'moai_model_latency_seconds_bucket{mix="echo",model="mini",le="+Inf"} 1' in text
    assert 'moai_gate_selected_total{mix="echo",model="mini"} 1' in text


async def test_unknown_routes_answer_in_openais_error_shape(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/nothing")
    assert reply.status_code == 404 and set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_a_wrong_mix_file_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nmodels: {}\n")
    with pytest.raises(MixError, match=r"bad\.yaml"):
        create_app(tmp_path)
    with pytest.raises(MixError, match="not a folder"):
        create_app(tmp_path / "missing")


async def test_a_client_that_leaves_mid_stream_cancels_its_run(mixes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = ScriptedChatModel._astream

    async def stalls(self: ScriptedChatModel, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for chunk in original(self, *args, **kwargs):
            yield chunk
            if chunk.message.text.startswith("merged"):  # the aggregator stalls after its first token
                await asyncio.Event().wait()

    monkeypatch.setattr(ScriptedChatModel, "_astream", stalls)
    app = create_app(mixes)
    body = json.dumps({"model": "panel", "messages": USER, "stream": True}).encode()
    requested, left = False, asyncio.Event()
    started: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif b"merged" in message.get("body", b""):
            left.set()  # the client goes away once it has the first token

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("moai", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=60)
    assert left.is_set() and started["status"] == 200
    run_id = dict(started["headers"])[b"x-moai-run-id"].decode()
    run, _ = stored(run_id)
    assert run["status"] == "error"
    text = (await httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m").get("/metrics")).text
    assert 'moai_errors_total{mix="panel",code="client_disconnected"} 1' in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port"),
        (["--workers", "0"], "--workers"),
        (["--mixes", "/no/such/folder"], "not a folder"),
        (["--port", "eighty"], "invalid int value"),
    ],
)
def test_serve_refuses_a_wrong_flag_with_exit_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.suppress(SystemExit):  # argparse's own refusals exit 2 by SystemExit
        assert main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_starts_uvicorn_on_the_apps_factory(mixes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.update(kwargs, app=app))
    monkeypatch.delenv("MOAI_SERVE_MIXES", raising=False)
    assert main(["serve", "--port", "8123", "--mixes", str(mixes), "--workers", "2"]) == 0
    assert started == {
        "app": "moai.serve.app:app_from_env",
        "factory": True,
        "host": "127.0.0.1",
        "port": 8123,
        "workers": 2,
    }
    assert os.environ["MOAI_SERVE_MIXES"] == os.path.abspath(mixes)
    assert "echo" in app_from_env().state.catalog.names()


async def test_an_unexpected_error_is_a_500_without_its_details(mixes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(MixtureChatModel, "ainvoke", broken)
    app = create_app(mixes)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://moai") as client:
        reply = await client.post("/v1/chat/completions", json={"model": "echo", "messages": USER})
        assert reply.status_code == 500 and "secret" not in reply.text
        assert reply.json()["error"] == {
            "message": "internal error: RuntimeError",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
        assert 'moai_errors_total{mix="echo",code="internal_error"} 1' in (await client.get("/metrics")).text


def test_metrics_count_the_gates_cache_hits_and_escape_labels() -> None:
    metrics = Metrics()
    metrics.run('mix "x"\n', {"calls": [], "selected": ["m"], "cache_hit": True})
    metrics.run('mix "x"\n', {"calls": [], "selected": ["m"], "cache_hit": False})
    text = metrics.render()
    assert 'moai_gate_cache_hits_total{mix="mix \\"x\\"\\n"} 1' in text
    assert 'moai_gate_selected_total{mix="mix \\"x\\"\\n",model="m"} 2' in text
