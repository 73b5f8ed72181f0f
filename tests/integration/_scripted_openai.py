"""A scripted OpenAI-compatible server on a free loopback port: it answers with tool calls or text, as told.

Each `model` of a request has a script: a list of replies, taken in turn (round and round). A reply is a
dict: `{"content": "..."}` (`{tool}` is replaced by the last tool message's content, `{query}` by the last
message's) or `{"tool_calls": [{"name": ..., "arguments": "<JSON text>"}]}`. It answers plain and
streamed requests (`stream_options.include_usage` too) in OpenAI's shapes, and records every request's
body, so tests can see which model was offered the tools and the response format.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

__all__ = ["ScriptedServer", "scripted_server"]


class ScriptedServer:
    """The server's scripts and what it was sent."""

    def __init__(self, scripts: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        self.scripts = {name: list(replies) for name, replies in scripts.items()}
        self._turns = {name: itertools.count() for name in scripts}
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._lock = threading.Lock()

    def sent_to(self, model: str) -> list[dict[str, Any]]:
        """Return the bodies of the requests to one model, in order."""
        with self._lock:
            return [body for body in self.requests if body.get("model") == model]

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            replies = self.scripts[body["model"]]
            reply = dict(replies[next(self._turns[body["model"]]) % len(replies)])
        messages = body.get("messages", [])
        last_tool = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "tool"), "")
        last = messages[-1].get("content", "") if messages else ""
        if "content" in reply:
            reply["content"] = reply["content"].replace("{tool}", str(last_tool)).replace("{query}", str(last))
        return reply

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Any:
            body = await request.json()
            reply = self.reply(body)
            calls = [
                {"id": f"call_{i}", "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for i, c in enumerate(reply.get("tool_calls", []))
            ]
            text = reply.get("content")
            tokens_in = sum(len(str(m.get("content") or "").split()) for m in body.get("messages", []))
            tokens_out = len((text or "").split()) + sum(len(c["function"]["arguments"]) for c in calls)
            usage = {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            }
            finish = "tool_calls" if calls else "stop"
            head = {"id": "chatcmpl-scripted", "created": int(time.time()), "model": body["model"]}
            if not body.get("stream"):
                message: dict[str, Any] = {"role": "assistant", "content": text}
                if calls:
                    message["tool_calls"] = calls
                choice = {"index": 0, "message": message, "finish_reason": finish}
                return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage})

            async def events() -> AsyncIterator[str]:
                def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
                    return f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

                yield chunk({"role": "assistant", "content": ""})
                for word in (text or "").split(" ") if text else []:
                    yield chunk({"content": word + " "})
                for i, call in enumerate(calls):
                    yield chunk({"tool_calls": [{"index": i, **call}]})
                yield chunk({}, finish)
                if (body.get("stream_options") or {}).get("include_usage"):
                    data = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                    yield f"data: {json.dumps(data)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scripted_server(scripts: Mapping[str, Sequence[dict[str, Any]]]) -> Iterator[ScriptedServer]:
    """Run a scripted server in a thread of this process; yield it, its `url` set (`.../v1`)."""
    scripted = ScriptedServer(scripts)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(scripted.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    else:
        raise RuntimeError("the scripted OpenAI-compatible server did not start")
    scripted.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield scripted
    finally:
        server.should_exit = True
        thread.join(timeout=10)
