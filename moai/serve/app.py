"""The OpenAI-compatible HTTP API of the mixes: a thin layer over `MixtureChatModel`.

Each mix (bundled, or a file in the `--mixes` folder) is served under its name as a `model`. A request's
messages become the mix's input exactly as for `MixtureChatModel` (the last user message is the query,
the turns before it the history, system texts before the query); `user` is the run's user (A/B arms by
user, the usage rows). The server keeps no state of its own: usage and feedback go to the usage store.

A request's `temperature`, `top_p`, `max_tokens` and `max_completion_tokens` are validated (a bounded,
finite number) and then not applied: every model of a mix keeps the settings its mix file gives it, since
one value pressed on proposers, judges and aggregator alike would change what the mix is. What a mix
cannot do (`n` > 1, `logprobs`) is refused by name (see `schemas.unsupported`).

`tools`, `tool_choice` and `response_format` go to the model that gives the answer (see
`moai.nodes.tools`); its tool calls come back in OpenAI's shape (`message.tool_calls`, finish reason
`tool_calls`; in a stream, a `tool_calls` delta). A call's id carries the model that made it
(`moai.<base32 of the model>.<its own id>`), so that the next request, which holds the call and the
tool's result (`role: tool`), goes back to that model, though the server keeps no state. A reply that is
not the JSON `response_format` asks for (or breaks a strict schema) is a failed call: the model's
fallbacks are tried; when none gives valid JSON the request is a 502 listing the attempts.

With `keys` (`moai serve --keys FILE`), every request but `/health` needs a bearer key of the file
(401 otherwise), and a chat completion one within the key's daily spend and rate (429 with the reason and
`Retry-After` otherwise; see `moai.serve.keys`); the key's id goes into every usage row of its runs.

A streamed reply sends `x-moai-run-id` in its headers; the models, cost and path are known only at its
end, so they come in the last chunk's `moai` field (a field OpenAI's clients keep and ignore).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from moai.chat_model import MixtureChatModel
from moai.errors import MixError, MixRunError, ProviderError
from moai.mix_instructions import MixSpec, bundled_mixes, load_any
from moai.nodes.tools import check_offer
from moai.serve.errors import ApiError, error_response
from moai.serve.keys import Key, KeyGuard, Keys, load_keys
from moai.serve.metrics import Metrics
from moai.serve.schemas import ChatCompletionRequest, ChatMessage, FeedbackRequest, unsupported
from moai.usage import monitor_for, record_feedback, resolve_db

__all__ = ["MAX_BODY_BYTES", "Catalog", "app_from_env", "create_app"]

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest request body read; a larger one is refused (413) before it is parsed."""
MIX_SUFFIXES = (".yaml", ".yml", ".json")

_log = logging.getLogger("moai.serve")
_B = TypeVar("_B", bound=BaseModel)
_T = TypeVar("_T")


class Catalog:
    """The mixes a server answers with: the bundled ones, and the files of a folder (which win on a name).

    Every file is read when the catalog is made, so a wrong mix stops the server before it serves; each
    mix is compiled on its first request, once.

    Raises:
        MixError: A file of the folder is not a valid mix, two files name the same mix, or the folder is missing.
    """

    def __init__(self, mixes_dir: str | os.PathLike[str] | None = None, usage_db: str | os.PathLike[str] | None = None):
        self.usage_db = usage_db
        self.sources: dict[str, str] = {name: name for name in bundled_mixes()}
        self.descriptions: dict[str, str] = {}
        if mixes_dir is not None:
            folder = Path(mixes_dir)
            if not folder.is_dir():
                raise MixError(str(folder), "--mixes", "not a folder: give a folder of mix files (.yaml, .yml, .json)")
            files: dict[str, Path] = {}
            for path in sorted(p for p in folder.iterdir() if p.suffix in MIX_SUFFIXES and p.is_file()):
                spec = load_any(path)
                if spec.name in files:
                    raise MixError(str(path), "name", f"mix '{spec.name}' is also defined in {files[spec.name]}")
                files[spec.name] = path
                self.sources[spec.name] = str(path)
                self.descriptions[spec.name] = spec.description or ""
        self._models: dict[str, MixtureChatModel] = {}
        self.budgets: dict[str, float | None] = {}
        """Each compiled mix's `budget_usd`: the most one of its runs can cost (a key's hold)."""
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Return the names of the mixes served, sorted."""
        return sorted(self.sources)

    def description(self, name: str) -> str:
        """Return a mix's description."""
        if name not in self.descriptions:
            self.descriptions[name] = load_any(self.sources[name]).description or ""
        return self.descriptions[name]

    def compiled(self, name: str) -> MixtureChatModel | None:
        """Return the chat model of a mix if it is compiled already, else None (never blocks)."""
        return self._models.get(name)

    def model(self, name: str) -> MixtureChatModel:
        """Return the chat model of a mix, compiled on first use (blocking: call it in a thread).

        Raises:
            ApiError: No mix has this name (404, listing the mixes), or it cannot be built here (500).
        """
        if name not in self.sources:
            raise ApiError(
                404,
                f"the model '{name[:200]}' does not exist: the mixes served are {', '.join(self.names())}",
                param="model",
                code="model_not_found",
            )
        with self._lock:
            if name not in self._models:
                try:
                    self._models[name] = MixtureChatModel(mix=self.sources[name], usage_db=self.usage_db)
                    spec = load_any(self.sources[name])
                    # An A/B split's arms are mixes of their own: it holds nothing (see KeyGuard.admit).
                    self.budgets[name] = spec.gate.objective.budget_usd if isinstance(spec, MixSpec) else None
                except (MixError, ProviderError) as err:
                    raise ApiError(500, f"the mix '{name}' cannot run here: {err}", code="mix_unavailable") from err
            return self._models[name]


def create_app(
    mixes_dir: str | os.PathLike[str] | None = None,
    usage_db: str | os.PathLike[str] | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    keys: str | os.PathLike[str] | Keys | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Return the server's ASGI app.

    Args:
        mixes_dir: A folder of mix files served besides the bundled mixes (a file wins on a name).
        usage_db: Where runs and feedback are recorded, as for `moai.load_mix`.
        max_body_bytes: The largest request body accepted.
        keys: A keys file (or its keys): every request but `/health` then needs one of its bearer keys,
            and a chat completion one within its limits. None: no key is asked for.
        clock: The time now (Unix seconds) the keys' limits count with; tests give their own.

    Raises:
        MixError: A mix file of `mixes_dir` is not valid (see `Catalog`), the keys file is not valid, or
            a key has a limit while the usage store is off.
    """
    catalog = Catalog(mixes_dir, usage_db)
    guard = None if keys is None else KeyGuard(keys if isinstance(keys, Keys) else load_keys(keys), usage_db, clock)
    metrics = Metrics()

    async def authorize(request: Request) -> Key | None:
        """Return the request's key (None without `keys`); 401 without one."""
        return None if guard is None else guard.check_key(request.headers.get("authorization"))

    async def admit(key: Key | None, mix: str, run_id: str) -> bool:
        """Let a run in within its key's limits (429 otherwise); return whether it must be settled."""
        if guard is None or key is None:
            return False
        return await run_in_threadpool(guard.admit, key, run_id, catalog.budgets.get(mix))

    def settle(run_id: str) -> None:
        if guard is not None:
            guard.settle(run_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn ends its process by re-raising the SIGTERM it drained on, which skips atexit: the usage
        # rows still queued (calls, runs, the keys' settled holds) are written now, or they would be lost.
        db = resolve_db(usage_db)
        if db is not None:
            await run_in_threadpool(monitor_for(db).flush)
        if guard is not None:
            guard.close()

    app = FastAPI(
        title="moai", summary="Mixes of models behind an OpenAI-compatible API", docs_url=None, lifespan=lifespan
    )
    app.state.catalog = catalog
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(_invalid(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(ApiError(err.status_code, str(err.detail), code=str(err.status_code)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        _log.exception("unexpected error on %s", request.url.path)
        return error_response(ApiError(500, f"internal error: {type(err).__name__}", code="internal_error"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "mixes": len(catalog.sources)}

    @app.get("/metrics")
    async def prometheus(request: Request) -> PlainTextResponse:
        await authorize(request)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        await authorize(request)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "moai", "description": catalog.description(name)}
            for name in catalog.names()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        await authorize(request)
        body = _parse(FeedbackRequest, await _read_json(request, max_body_bytes))
        try:
            await run_in_threadpool(record_feedback, body.run_id, body.score, body.comment, db=usage_db)
        except KeyError as err:
            raise ApiError(404, f"no run has the id '{body.run_id}'", param="run_id", code="run_not_found") from err
        except ValueError as err:
            raise ApiError(400, str(err), param="score", code="invalid_value") from err
        return {"object": "feedback", "run_id": body.run_id, "score": body.score}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        mix = "-"  # an unknown model's name is not a label: clients could grow the metrics without bound
        try:
            key = await authorize(request)  # before the body is read: a stranger's costs nothing
            body = _parse(ChatCompletionRequest, await _read_json(request, max_body_bytes))
            # A compiled mix is taken as it is: a trip through the thread pool costs two thread switches.
            model = catalog.compiled(body.model)
            if model is None:
                model = await run_in_threadpool(catalog.model, body.model)
            mix = body.model
            if (refused := unsupported(body)) is not None:
                raise ApiError(400, refused[1], param=refused[0], code="unsupported_parameter")
            offered = _offer(body)
            messages = to_messages(body.messages)
            run_id = str(uuid.uuid4())
            config: dict[str, Any] = {"run_id": uuid.UUID(run_id)}
            configurable = {"user_id": body.user, "key_id": key.id if key else None}
            if any(configurable.values()):
                config["configurable"] = {name: value for name, value in configurable.items() if value}
            held = await admit(key, mix, run_id)
            ended = (lambda: settle(run_id)) if held else None
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                return await _stream(
                    model, messages, config, offered, mix, run_id, include_usage, metrics, started, ended
                )
            try:
                reply = await _answer(model.ainvoke(messages, config, **offered))  # type: ignore[arg-type]
            finally:
                if ended is not None:
                    ended()
        except ApiError as err:
            metrics.request(mix, err.status, time.perf_counter() - started, err.code)
            raise
        except Exception:  # answered by the app's handler as a 500, without the details
            metrics.request(mix, 500, time.perf_counter() - started, "internal_error")
            raise
        meta = reply.response_metadata
        metrics.run(mix, meta)
        metrics.request(mix, 200, time.perf_counter() - started)
        calls = _calls_out(reply)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text if reply.text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        completion = {
            "id": f"chatcmpl-{run_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": mix,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": _usage(reply),
        }
        return JSONResponse(completion, headers=_headers(meta))

    return app


def app_from_env() -> FastAPI:
    """Return the app for `moai serve`'s workers: the mixes folder in $MOAI_SERVE_MIXES, the keys file in
    $MOAI_SERVE_KEYS (usage: $MOAI_USAGE_DB)."""
    return create_app(os.environ.get("MOAI_SERVE_MIXES") or None, keys=os.environ.get("MOAI_SERVE_KEYS") or None)


def _offer(body: ChatCompletionRequest) -> dict[str, Any]:
    """Return a request's tools, tool choice and response format, checked, as `MixtureChatModel` takes them.

    Raises:
        ApiError: One is malformed, too many or too large (400 naming the field).
    """
    try:
        offer = check_offer(body.tools, body.tool_choice, body.response_format)
    except ValueError as err:
        raise ApiError(400, str(err), param=str(err).partition(":")[0], code="invalid_value") from err
    parts = {"tools": list(offer.tools), "tool_choice": offer.tool_choice, "response_format": offer.response_format}
    return {name: value for name, value in parts.items() if value}


_CALL_ID = "moai"


def _call_id(model: str | None, call_id: str | None, index: int) -> str:
    """Return the id a tool call goes out with: the model that made it, and the call's own id."""
    own = call_id or f"call_{index}"
    if not model:
        return own
    return f"{_CALL_ID}.{base64.b32encode(model.encode()).decode().rstrip('=').lower()}.{own}"


def _read_call_id(call_id: str) -> tuple[str | None, str]:
    """Return the model a tool call's id names (None if none) and the call's own id."""
    prefix, _, rest = call_id.partition(".")
    encoded, _, own = rest.partition(".")
    if prefix != _CALL_ID or not encoded or not own:
        return None, call_id
    try:
        model = base64.b32decode(encoded.upper() + "=" * (-len(encoded) % 8)).decode()
    except (binascii.Error, ValueError):
        return None, call_id
    return model, own


def _calls_out(reply: AIMessage) -> list[dict[str, Any]]:
    """Return a reply's tool calls in OpenAI's shape; their arguments as the model gave them, as JSON text."""
    model = reply.response_metadata.get("answered_by")
    return [
        {
            "id": _call_id(model, call.get("id"), i),
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for i, call in enumerate(reply.tool_calls)
    ]


def to_messages(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    """Return a request's conversation as LangChain messages, in the shape `MixtureChatModel` answers.

    After the last user message may come a tool turn: assistant messages with the tool calls the server
    returned, and a `tool` message with each call's result; it ends with a result.

    Raises:
        ApiError: No user message, another message after the last one, a tool result that answers no
            call, arguments that are not a JSON object, or an empty question.
    """
    users = [i for i, message in enumerate(messages) if message.role == "user"]
    if not users:
        raise ApiError(400, "messages: no user message: the last user message is the question", param="messages")
    last = users[-1]
    out: list[BaseMessage] = []
    called: set[str] = set()
    for i, message in enumerate(messages):
        text = message.text()
        if message.role in ("system", "developer"):
            out.append(SystemMessage(text))
        elif message.role == "user":
            out.append(HumanMessage(text))
        elif message.role == "assistant":
            if i > last and not message.tool_calls:
                raise ApiError(
                    400,
                    f"messages.{i}: a mix answers the last user message, or the results of the tools it called "
                    "after it; an assistant message without tool_calls cannot follow it",
                    param=f"messages.{i}.role",
                )
            calls, model = _calls_in(i, message)
            called |= {str(call["id"]) for call in calls}
            out.append(AIMessage(text, tool_calls=calls, response_metadata={"answered_by": model} if model else {}))
        else:
            if message.tool_call_id is None:
                raise ApiError(
                    400,
                    f"messages.{i}.tool_call_id: a tool message needs the id of the call it answers",
                    param=f"messages.{i}.tool_call_id",
                )
            own = _read_call_id(message.tool_call_id)[1]
            if i > last and own not in called:
                raise ApiError(
                    400,
                    f"messages.{i}.tool_call_id: answers no tool call of the assistant messages before it",
                    param=f"messages.{i}.tool_call_id",
                )
            out.append(ToolMessage(text, tool_call_id=own))
    after = [m for m in messages[last + 1 :] if m.role not in ("system", "developer")]
    if after and after[-1].role != "tool":
        raise ApiError(
            400, "messages: a tool turn after the last user message must end with a tool message", param="messages"
        )
    if not messages[last].text().strip():
        raise ApiError(400, f"messages.{last}.content: the question is empty", param=f"messages.{last}.content")
    return out


def _calls_in(i: int, message: ChatMessage) -> tuple[list[ToolCall], str | None]:
    """Return an assistant message's tool calls with their own ids, and the model their ids name."""
    calls: list[ToolCall] = []
    model: str | None = None
    for j, call in enumerate(message.tool_calls or []):
        where = f"messages.{i}.tool_calls.{j}.function.arguments"
        try:
            args = json.loads(call.function.arguments or "{}", parse_constant=_no_constant)
        except (ValueError, RecursionError) as err:
            raise ApiError(400, f"{where}: not JSON: {str(err)[:200]}", param=where) from err
        if not isinstance(args, dict):
            raise ApiError(400, f"{where}: must be a JSON object", param=where)
        named, own = _read_call_id(call.id)
        model = named or model
        calls.append(ToolCall(name=call.function.name, args=args, id=own, type="tool_call"))
    return calls, model


async def _read_json(request: Request, limit: int) -> Any:
    """Read a request's JSON body, refusing one over `limit` bytes before reading it all."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the body is over {limit} bytes", code="request_too_large")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes", code="request_too_large")
        parts.append(part)
    try:
        return json.loads(b"".join(parts), parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(400, f"the body is not valid JSON: {str(err)[:200]}", code="invalid_json") from err


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(model: type[_B], body: Any) -> _B:
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise _invalid(err.errors(include_input=False)) from err


def _invalid(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """Return the 400 of a body that does not validate, naming its first wrong field."""
    if not errors:
        return ApiError(400, "the body is not a valid request", code="invalid_value")
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid body"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(400, message + more, param=where or None, code="invalid_value")


async def _answer(call: Awaitable[_T]) -> _T:
    """Await a mix's answer; a run no model answered is a 502 that lists the attempts."""
    try:
        return await call
    except MixRunError as err:
        raise ApiError(502, str(err), code="no_model_answered") from err
    except (ProviderError, MixError) as err:
        raise ApiError(500, str(err), code="mix_unavailable") from err
    except ValueError as err:  # what the chat model refuses of a conversation: checked above, so rare
        raise ApiError(400, str(err)[:500], param="messages", code="invalid_value") from err


def _usage(reply: AIMessage) -> dict[str, int]:
    usage = reply.usage_metadata or {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }


def _header(value: str) -> str:
    """Return a header value that HTTP can carry: anything outside printable ASCII percent-escaped."""
    return quote(value, safe=" ,->._:/@+=()[]")


def _headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """Return the `x-moai-*` headers of a finished run."""
    return {
        "x-moai-run-id": _header(str(meta["run_id"])),
        "x-moai-models": _header(",".join(meta["models_used"])),
        "x-moai-cost-usd": f"{meta['cost_usd']:.8f}",
        "x-moai-path": _header(" -> ".join(meta["trace"])),
    }


def _moai(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the headers of a finished run carry, for the last chunk of a stream (sent after its headers)."""
    return {
        "run_id": meta["run_id"],
        "models": list(meta["models_used"]),
        "cost_usd": meta["cost_usd"],
        "path": list(meta["trace"]),
    }


async def _pump(pieces: AsyncIterator[AIMessageChunk], queue: asyncio.Queue[tuple[bool, Any]]) -> None:
    """Put each chunk of a run in `queue` as (True, chunk), then (False, None), or (False, the error)."""
    try:
        async for piece in pieces:
            await queue.put((True, piece))
    except Exception as err:  # raised where the chunks are read
        await queue.put((False, err))
    else:
        await queue.put((False, None))


async def _stop(pump: asyncio.Task[None]) -> None:
    """Cancel a run's task if it is still going, and wait for it: a cancelled run records itself as failed."""
    pump.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.gather(pump, return_exceptions=True)


def _sse(data: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(
    model: MixtureChatModel,
    messages: list[BaseMessage],
    config: dict[str, Any],
    offered: dict[str, Any],
    mix: str,
    run_id: str,
    include_usage: bool,
    metrics: Metrics,
    started: float,
    ended: Callable[[], None] | None = None,
) -> StreamingResponse:
    """Stream the final answer's tokens as OpenAI's chunks.

    The first token is awaited before the response starts, so a run that fails before it (no model
    answered) is still a 502 with the error's body. A client that goes away cancels the run: Starlette
    cancels the body's task, which cancels the mix's graph, which records the run as failed. `ended` is
    called once the run is over, however it ends (a key's hold is settled then).
    """
    # The run is read by a task of its own: cancelling the response (Starlette's cancel scope cancels
    # every await in it, again and again) must not cut short the run's own cleanup, which records it.
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    pump = asyncio.create_task(_pump(model.astream(messages, config, **offered), queue))  # type: ignore[arg-type]
    if ended is not None:
        pump.add_done_callback(lambda _: ended())

    async def next_piece() -> AIMessageChunk | None:
        more, item = await queue.get()
        if more:
            return item  # type: ignore[no-any-return]
        if item is not None:
            raise item
        return None

    try:
        first = await _answer(next_piece())
        if first is None:  # a run always ends with a chunk that carries its usage
            raise ApiError(502, "the mix ended without an answer", code="no_model_answered")
    except BaseException:
        await _stop(pump)
        raise
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse(
            {
                "id": f"chatcmpl-{run_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": mix,
                "choices": [choice],
                **more,
            }
        )

    async def events() -> AsyncIterator[str]:
        # Until the stream ends one way or another, the client is taken to have gone.
        status: int = 499
        code: str | None = "client_disconnected"
        try:
            yield chunk({"role": "assistant", "content": ""})
            piece: AIMessageChunk | None = first
            last = first
            while piece is not None:
                if piece.text:
                    yield chunk({"content": piece.text})
                if piece.usage_metadata is not None:
                    last = piece
                piece = await next_piece()
            meta = last.response_metadata
            metrics.run(mix, meta)
            if calls := _calls_out(last):
                yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
            yield chunk({}, "tool_calls" if calls else "stop", moai=_moai(meta))
            if include_usage:
                usage = _usage(last)
                yield _sse(
                    {
                        "id": f"chatcmpl-{run_id}",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": mix,
                        "choices": [],
                        "usage": usage,
                    }
                )
            yield "data: [DONE]\n\n"
            status, code = 200, None
        except (MixRunError, ProviderError, MixError) as err:
            # The headers are sent: the error goes in the stream, as OpenAI's own streams report one.
            status, code = 502, "no_model_answered"
            yield _sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": code}})
            yield "data: [DONE]\n\n"
        finally:
            await _stop(pump)
            metrics.request(mix, status, time.perf_counter() - started, code)

    headers = {"x-moai-run-id": run_id, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
